"""Sensor stems and cross-attention fusion of TerraFM (docs/design.md, "Encoder and checkpoint layout", "Fusion", paper §3.2).

Each sensor product has its own 16 x 16 patch convolution to a wide token of width ``A = 3 D`` plus
a learned modality vector. Tokens of the sensors present at a patch position are fused by ``N_q``
learned queries attending over the ``m`` modality tokens of that position only ("Case N"); one
sensor skips the attention, which is exact because a softmax over one key is 1. Then ``norm_input``,
``proj2`` and ``proj3`` bring the token to the transformer width ``D``.

Parameter names mirror the published checkpoints (``patch_embed.conv2d_s2_l2a``,
``patch_embed.projection.proj1`` ...). The fusion parameters (``queries``, ``key``, ``query_pool``)
are absent from them and keep their initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from terrafm.sensors import SENSOR_KEYS, get_sensor

__all__ = ["FusionProjection", "SensorStems"]


class FusionProjection(nn.Module):
    """Wide modality tokens (B, N, m, A) to transformer tokens (B, N, D).

    Args:
        attn_dim: stem width ``A``.
        embed_dim: transformer width ``D``.
        num_queries: learned fusion queries ``N_q`` (paper: 5).
        num_heads: heads of the per-position cross-attention (**choice**: 16).
    """

    def __init__(self, attn_dim: int, embed_dim: int, num_queries: int = 5, num_heads: int = 16):
        super().__init__()
        if attn_dim % num_heads:
            raise ValueError(f"fusion: stem width {attn_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.proj1 = nn.Linear(attn_dim, attn_dim, bias=False)  # values
        self.norm_input = nn.LayerNorm(attn_dim)  # eps 1e-5, as in the published code
        self.proj2 = nn.Linear(attn_dim, attn_dim)
        self.proj3 = nn.Linear(attn_dim, embed_dim)
        # Fusion-only parameters, not in published checkpoints.
        self.queries = nn.Parameter(torch.zeros(num_queries, attn_dim))
        self.key = nn.Linear(attn_dim, attn_dim, bias=False)
        self.query_pool = nn.Linear(attn_dim, 1)

    def single(self, z: torch.Tensor) -> torch.Tensor:
        """One modality: (B, N, A) -> (B, N, D), the published single-sensor path."""
        return self.proj3(self.proj2(self.norm_input(self.proj1(z))))

    def fuse(self, z: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Several modalities per position.

        Args:
            z: (B, N, m, A) modality tokens (stem output plus modality vector).
            present: (B, m) bool, True where the sample has that sensor; None = all present.

        Returns:
            (B, N, D) fused tokens.
        """
        b, n, m, a = z.shape
        h = self.num_heads
        hd = a // h
        k = self.key(z).reshape(b * n, m, h, hd).transpose(1, 2)  # (BN, h, m, hd)
        v = self.proj1(z).reshape(b * n, m, h, hd).transpose(1, 2)  # (BN, h, m, hd)
        q = self.queries.to(k.dtype).reshape(1, -1, h, hd).transpose(1, 2)  # (1, h, Nq, hd)
        q = q.expand(b * n, -1, -1, -1)
        mask = None
        if present is not None:
            # (BN, 1, 1, m): every position of a sample shares its sensor set.
            mask = present[:, None, :].expand(b, n, m).reshape(b * n, 1, 1, m)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (BN, h, Nq, hd)
        o = o.transpose(1, 2).reshape(b, n, -1, a)  # (B, N, Nq, A)
        o = self.norm_input(o)
        w = self.query_pool(o).softmax(dim=2)  # (B, N, Nq, 1)
        fused = (w * o).sum(dim=2)  # (B, N, A)
        return self.proj3(self.proj2(fused))


class SensorStems(nn.Module):
    """Per-sensor patch convolutions, modality vectors and the fusion projection.

    Args:
        embed_dim: transformer width ``D``; the stem width is ``3 D``.
        patch_size: patch side in pixels (16).
        num_queries: fusion queries.
        fusion_heads: fusion attention heads.
    """

    def __init__(
        self, embed_dim: int, patch_size: int = 16, num_queries: int = 5, fusion_heads: int = 16
    ):
        super().__init__()
        a = 3 * embed_dim
        self.attn_dim = a
        self.patch_size = patch_size
        for key in SENSOR_KEYS:
            conv = nn.Conv2d(get_sensor(key).num_bands, a, patch_size, stride=patch_size)
            self.add_module(f"conv2d_{key}", conv)
            self.register_parameter(f"{key}_embed", nn.Parameter(torch.zeros(1, a)))
        self.projection = FusionProjection(a, embed_dim, num_queries, fusion_heads)

    def conv(self, key: str) -> nn.Conv2d:
        conv = getattr(self, f"conv2d_{key}")
        assert isinstance(conv, nn.Conv2d)
        return conv

    def modality_embed(self, key: str) -> nn.Parameter:
        p = getattr(self, f"{key}_embed")
        assert isinstance(p, nn.Parameter)
        return p

    def tokens(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """Wide tokens of one sensor: (B, C, H, W) -> (B, N, A)."""
        z = self.conv(key)(x).flatten(2).transpose(1, 2)  # (B, N, A)
        return z + self.modality_embed(key)

    def forward(
        self, inputs: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Embed a dict of sensor tensors (B, C_s, H, W) into (B, N, D) tokens.

        Args:
            inputs: normalised input per sensor key, all with the same B, H and W.
            masks: optional (B,) bool per sensor key, True where the sample has that sensor.
        """
        keys = list(inputs)
        if len(keys) == 1 and (masks is None or bool(masks[keys[0]].all())):
            return self.projection.single(self.tokens(keys[0], inputs[keys[0]]))
        zs = []
        for key in keys:
            x = inputs[key]
            if masks is not None:
                # Absent samples may hold NaN fill: zero them so 0-weight values stay finite.
                x = torch.where(masks[key].view(-1, 1, 1, 1), x, torch.zeros((), dtype=x.dtype))
            zs.append(self.tokens(key, x))
        z = torch.stack(zs, dim=2)  # (B, N, m, A)
        present = None
        if masks is not None:
            present = torch.stack([masks[k] for k in keys], dim=1)  # (B, m)
        return self.projection.fuse(z, present)
