"""DINO projection head and the backbone + head wrapper used for multi-crop (docs/design.md, "Objective").

The head is DINO v1's: an MLP (``nlayers`` linears, GELU, hidden 2048) to a 256-d bottleneck,
L2-normalised, then a weight-normalised linear layer without bias to ``K`` prototypes. With
``norm_last_layer`` the weight norm is fixed to 1 (only the direction ``v`` is learned), which
DINO found to stabilise training.

For the opt-in masked patch distillation (docs/pretraining.md) the wrapper also holds a learned
mask token and a patch head (or shares the CLS head), and returns the global views' patch logits
and backbone CLS embeddings beside the CLS logits; without these options it is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from terrafm.models import TerraFM

__all__ = ["DINOHead", "MultiCropModel", "WeightNormLinear", "backbone_tokens", "concat_views"]

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


def _size_groups(views: Sequence[View], start: int = 0) -> list[list[int]]:
    """Indices of the views from ``start`` on, in runs of consecutive views of one size."""
    groups: list[list[int]] = []
    last: tuple[int, ...] | None = None
    for i in range(start, len(views)):
        size = tuple(next(iter(views[i]["inputs"].values())).shape[-2:])
        if groups and size == last:
            groups[-1].append(i)
        else:
            groups.append([i])
            last = size
    return groups


def backbone_tokens(
    backbone: TerraFM,
    inputs: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    token_mask: torch.Tensor | None = None,
    mask_token: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final-normed tokens (B, 1 + N, D) of a training forward, with patch embeddings masked.

    The same computation as ``backbone.forward_features`` (stems + fusion, CLS, position
    embedding, blocks, norm), except that where ``token_mask`` (B, N) is set the patch embedding
    (after the stems and the fusion, before the position embedding) is replaced by
    ``mask_token`` (1, 1, D), as iBOT does.
    """
    if token_mask is None:
        x, _, _ = backbone.prepare_tokens(dict(inputs), None if masks is None else dict(masks))
    else:
        if mask_token is None:
            raise ValueError("a token mask needs a mask token")
        b, h, w = backbone.check_inputs(dict(inputs), None if masks is None else dict(masks))
        p = backbone.patch_size
        x = backbone.patch_embed(dict(inputs), None if masks is None else dict(masks))  # (B, N, D)
        if tuple(token_mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"token mask of shape {tuple(token_mask.shape)} for {tuple(x.shape[:2])} patches"
            )
        x = torch.where(token_mask[..., None], mask_token.to(x.dtype), x)
        x = torch.cat((backbone.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        x = x + backbone.interpolate_pos_encoding(h // p, w // p).to(x.dtype)
    for blk in backbone.blocks:
        x = blk(x)
    return backbone.norm(x)


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
        patch_head: the patch head of the masked patch distillation (None: no patch head).
        mask_token: hold a learned mask token (zeros at init) for masked student views.
    """

    mask_token: nn.Parameter | None

    def __init__(
        self,
        backbone: TerraFM,
        head: DINOHead,
        group_by_sensors: bool = False,
        patch_head: DINOHead | None = None,
        mask_token: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.group_by_sensors = group_by_sensors
        if patch_head is not None:
            self.patch_head = patch_head
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        else:
            self.mask_token = None

    def _subsets(self, masks: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, list[str]]]:
        """(sample indices, sensors used) of each sensor subset of a stacked call."""
        keys = list(masks)
        bits = sum(masks[k].long() << j for j, k in enumerate(keys))  # (N,) subset id
        assert isinstance(bits, torch.Tensor)
        out = []
        for sub in torch.unique(bits).tolist():
            idx = torch.nonzero(bits == sub).flatten()  # (n_sub,)
            out.append((idx, [k for j, k in enumerate(keys) if (sub >> j) & 1]))
        return out

    def _encode_tokens(
        self,
        inputs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        token_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Normed tokens (N, 1 + P, D) of one stacked call, optionally split by sensor subset."""
        keys = list(inputs)
        tok = self.mask_token
        if not self.group_by_sensors or len(keys) == 1:
            return backbone_tokens(self.backbone, inputs, masks, token_mask, tok)
        parts, order = [], []
        for idx, used in self._subsets(masks):
            sub_mask = None if token_mask is None else token_mask[idx]
            sub_in = {k: inputs[k][idx] for k in used}
            parts.append(backbone_tokens(self.backbone, sub_in, None, sub_mask, tok))
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))  # back to the stacked order
        return torch.cat(parts)[inverse]

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

    def forward(
        self,
        views: Sequence[View],
        n_global: int = 0,
        token_masks: torch.Tensor | None = None,
        patches: bool = False,
    ) -> Any:
        """Prototype logits of all views, concatenated in view order: (V * B, K).

        With ``n_global > 0`` (the first ``n_global`` views are the global crops, all of one
        size) it returns a dict instead: ``cls`` (V * B, K) logits, ``cls_features``
        (n_global * B, D) backbone CLS embeddings of the global views, and with ``patches`` the
        patch logits ``patch``: at the positions set in ``token_masks`` (n_global * B, P) as
        (M, K_p) in row-major order of the mask (those positions' embeddings replaced by the mask
        token), or at every position (n_global * B, P, K_p) when ``token_masks`` is None.
        """
        if n_global > 0:
            return self._forward_global(views, n_global, token_masks, patches)
        feats = []
        for g in _size_groups(views):
            inputs, masks = concat_views([views[i] for i in g])
            feats.append(self._encode(inputs, masks))  # (len(g) * B, D)
        return self.head(torch.cat(feats))  # (V * B, K)

    def _patch_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        head = getattr(self, "patch_head", None)
        return (self.head if head is None else head)(tokens)

    def _forward_global(
        self,
        views: Sequence[View],
        n_global: int,
        token_masks: torch.Tensor | None,
        patches: bool,
    ) -> dict[str, torch.Tensor]:
        sizes = {tuple(next(iter(v["inputs"].values())).shape[-2:]) for v in views[:n_global]}
        if len(sizes) != 1 or not 0 < n_global <= len(views):
            raise ValueError(f"the {n_global} global views must exist and share one size")
        if token_masks is not None and self.mask_token is None:
            raise ValueError("token masks given but the model holds no mask token")
        inputs, masks = concat_views(views[:n_global])
        tokens = self._encode_tokens(inputs, masks, token_masks)  # (G * B, 1 + P, D)
        cls_feat = tokens[:, 0]
        feats = [cls_feat]
        for g in _size_groups(views, n_global):  # the local crops, as in the plain forward
            local_in, local_masks = concat_views([views[i] for i in g])
            feats.append(self._encode(local_in, local_masks))  # (len(g) * B, D)
        out = {"cls": self.head(torch.cat(feats)), "cls_features": cls_feat}
        if patches:
            pt = tokens[:, 1:]  # (G * B, P, D)
            out["patch"] = self._patch_logits(pt if token_masks is None else pt[token_masks])
        return out
