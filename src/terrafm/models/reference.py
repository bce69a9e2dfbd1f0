"""A plain, unfused transcription of the published TerraFM inference numerics.

Used for two things only: as the second computation that tests compare :class:`TerraFM` against
(same state-dict keys, so the same weights load into both), and as the "straightforward
implementation" baseline of ``benchmarks/inference.py``. It follows the published single-sensor
path step by step: per-sensor conv + modality vector, ``proj1`` -> LayerNorm -> ``proj2`` ->
``proj3``, CLS, DINO-v1 position-embedding interpolation, explicit softmax attention with
``head_dim ** -0.5``, exact GELU, LayerNorm eps 1e-6 in the ViT and 1e-5 in the stem. The sensor
is an explicit argument (the published ``forward`` never reaches the L2A stem; this one does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ReferenceTerraFM"]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)), attn


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class _Projection(nn.Module):
    def __init__(self, a: int, d: int):
        super().__init__()
        self.proj1 = nn.Linear(a, a, bias=False)
        self.norm_input = nn.LayerNorm(a)
        self.proj2 = nn.Linear(a, a)
        self.proj3 = nn.Linear(a, d)


class _PatchEmbed(nn.Module):
    def __init__(self, d: int, p: int):
        super().__init__()
        a = 3 * d
        self.conv2d_s2_l2a = nn.Conv2d(12, a, p, stride=p)
        self.conv2d_s2_l1c = nn.Conv2d(12, a, p, stride=p)
        self.conv2d_s1 = nn.Conv2d(2, a, p, stride=p)
        self.s2_l2a_embed = nn.Parameter(torch.zeros(1, a))
        self.s2_l1c_embed = nn.Parameter(torch.zeros(1, a))
        self.s1_embed = nn.Parameter(torch.zeros(1, a))
        self.projection = _Projection(a, d)

    def forward(self, x: torch.Tensor, sensor: str) -> torch.Tensor:
        conv = getattr(self, f"conv2d_{sensor}")
        z = conv(x).flatten(2).transpose(1, 2) + getattr(self, f"{sensor}_embed")
        pr = self.projection
        return pr.proj3(pr.proj2(pr.norm_input(pr.proj1(z))))


class ReferenceTerraFM(nn.Module):
    """Straightforward TerraFM encoder (single sensor), published key layout."""

    def __init__(
        self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0
    ):
        super().__init__()
        self.patch = 16
        self.patch_embed = _PatchEmbed(embed_dim, self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 197, embed_dim))
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_encoding(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        npatch = x.shape[1] - 1
        n = self.pos_embed.shape[1] - 1
        if npatch == n and h == w:
            return self.pos_embed
        dim = x.shape[-1]
        h0, w0 = h // self.patch + 0.1, w // self.patch + 0.1
        side = int(math.sqrt(n))
        pp = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        pp = F.interpolate(pp, scale_factor=(h0 / side, w0 / side), mode="bicubic")
        pp = pp.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((self.pos_embed[:, :1], pp), dim=1)

    def forward_all(self, x: torch.Tensor, sensor: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """All block outputs (un-normed, with CLS) and the last block's attention."""
        b, _, h, w = x.shape
        t = self.patch_embed(x, sensor)
        t = torch.cat((self.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + self.interpolate_pos_encoding(t, h, w)
        outs = []
        attn = torch.empty(0)
        for blk in self.blocks:
            t, attn = blk(t)
            outs.append(t)
        return outs, attn

    def forward(self, x: torch.Tensor, sensor: str) -> torch.Tensor:
        outs, _ = self.forward_all(x, sensor)
        return self.norm(outs[-1])[:, 0]
