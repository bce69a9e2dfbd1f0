"""DINO projection head and the backbone + head wrapper used for multi-crop (SPEC §4).

The head is DINO v1's: an MLP (``nlayers`` linears, GELU, hidden 2048) to a 256-d bottleneck,
L2-normalised, then a weight-normalised linear layer without bias to ``K`` prototypes. With
``norm_last_layer`` the weight norm is fixed to 1 (only the direction ``v`` is learned), which
DINO found to stabilise training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from terrafm.models import TerraFM

__all__ = ["DINOHead", "MultiCropModel", "WeightNormLinear", "concat_views"]

View = Mapping[str, Mapping[str, torch.Tensor]]


class WeightNormLinear(nn.Module):
    """``y = g * (v / ||v||) x`` per output unit, no bias.

    Args:
        in_dim: input width.
        out_dim: number of outputs (prototypes).
        learn_norm: learn the per-output norm ``g``; otherwise it is fixed to 1.
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_g * F.normalize(self.weight_v, dim=1)  # (K, in)
        return F.linear(x, w)


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

    Args:
        in_dim: backbone width ``D``.
        out_dim: number of prototypes ``K``.
        hidden_dim: MLP width.
        bottleneck_dim: width before the last layer.
        nlayers: linear layers in the MLP (>= 1).
        norm_last_layer: fix the last layer's weight norm to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"DINOHead: nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) prototype logits."""
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6)  # (B, bottleneck)
        return self.last_layer(z)


def concat_views(views: Sequence[View]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stack views of one size along the batch.

    Returns:
        ``(inputs, masks)`` with every tensor of batch ``len(views) * B``.
    """
    keys = list(views[0]["inputs"])
    inputs = {k: torch.cat([v["inputs"][k] for v in views]) for k in keys}  # (V*B, C, S, S)
    masks = {k: torch.cat([v["masks"][k] for v in views]).bool() for k in keys}  # (V*B,)
    return inputs, masks


class MultiCropModel(nn.Module):
    """Backbone + head over a list of views; views of one size share one backbone call.

    Wrapping this one module (in DDP or FSDP) lets a step make several backbone calls per
    backward, as DINO's multi-crop wrapper does.

    Args:
        backbone: the encoder.
        head: the projection head.
        group_by_sensors: split each call by the samples' sensor subsets, so a sample runs only
            the stems it uses (one sensor: the single path, no fusion attention). Same result as
            masking (a masked sensor has zero attention weight), less compute; worth it on CPU,
            where the wide stems dominate small models. Off: one masked call per size, every
            sensor's stem and the fusion in the graph on every rank (what FSDP needs: its
            collectives require the same calls and the same parameters with gradients on all
            ranks).
    """

    def __init__(self, backbone: TerraFM, head: DINOHead, group_by_sensors: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.group_by_sensors = group_by_sensors

    def _encode(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """CLS embeddings (N, D) of one stacked call, optionally split by sensor subset."""
        keys = list(inputs)
        if not self.group_by_sensors or len(keys) == 1:
            return self.backbone(inputs, masks)
        bits = sum(masks[k].long() << j for j, k in enumerate(keys))  # (N,) subset id
        assert isinstance(bits, torch.Tensor)
        subsets = torch.unique(bits).tolist()
        if len(subsets) == 1 and subsets[0] == 2 ** len(keys) - 1:
            return self.backbone(inputs)  # everyone uses every sensor
        parts, order = [], []
        for sub in subsets:
            idx = torch.nonzero(bits == sub).flatten()  # (n_sub,)
            used = [k for j, k in enumerate(keys) if (sub >> j) & 1]
            parts.append(self.backbone({k: inputs[k][idx] for k in used}))  # (n_sub, D)
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))  # back to the stacked order
        return torch.cat(parts)[inverse]

    def forward(self, views: Sequence[View]) -> torch.Tensor:
        """Prototype logits of all views, concatenated in view order: (V * B, K)."""
        groups: list[list[int]] = []
        sizes: list[tuple[int, ...]] = []
        for i, v in enumerate(views):
            size = tuple(next(iter(v["inputs"].values())).shape[-2:])
            if sizes and sizes[-1] == size:
                groups[-1].append(i)
            else:
                sizes.append(size)
                groups.append([i])
        feats = []
        for g in groups:
            inputs, masks = concat_views([views[i] for i in g])
            feats.append(self._encode(inputs, masks))  # (len(g) * B, D)
        return self.head(torch.cat(feats))  # (V * B, K)
