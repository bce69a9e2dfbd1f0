"""Exact fast inference path of TerraFM (``eval()`` under ``torch.inference_mode()``).

Same function as the training path, fewer operations:

- Stem: ``proj1 . (conv + e)`` is one convolution with weight ``W1 Wc`` and bias ``W1 (bc + e)``, and
  ``proj3 . proj2`` is one linear map ``W3 W2``, ``W3 b2 + b3``. That removes two of the four
  ``A x A``-sized products per token (A = 2304 for TerraFM-B).
- Blocks: each LayerNorm's affine is folded into the linear map that follows it
  (``W (g * x + b) + c = (W diag g) x + (W b + c)``), and attention runs through
  ``scaled_dot_product_attention``.
- Under autocast the weights are cached once in the autocast dtype, instead of being cast again on
  every call; LayerNorms and the residual stream stay in float32.

Folded weights are cached per sensor and compute dtype and rebuilt whenever a source parameter
changes (its storage or version counter), so loading or editing weights afterwards stays correct.
Folding is done in float64 so the result matches the unfolded computation to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from terrafm.models.patch_embed import SensorStems

__all__ = ["FastPath"]


def _signature(tensors: Iterable[torch.Tensor]) -> tuple:
    sig = []
    for t in tensors:
        # Inference tensors keep no version counter; they can only change inside inference mode.
        version = -1 if t.is_inference() else t._version
        sig.append((t.data_ptr(), version, t.dtype, t.device, tuple(t.shape)))
    return tuple(sig)


def _fold_norm(ln: nn.LayerNorm, lin: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``lin(ln_affine(x))`` as one linear map on the affine-free LayerNorm."""
    w = lin.weight.double()
    b = lin.bias.double() if lin.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    return w * ln.weight.double()[None, :], w @ ln.bias.double() + b


def compute_dtype(x: torch.Tensor, param_dtype: torch.dtype) -> torch.dtype:
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return param_dtype


class FastPath:
    """Folded-weight cache and functional forward (not an ``nn.Module``: it owns no parameters)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, torch.dtype], tuple[tuple, list[torch.Tensor]]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def _get(
        self,
        name: str,
        dtype: torch.dtype,
        sources: list[torch.Tensor],
        build: Callable[[], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        sig = _signature(sources)
        hit = self._cache.get((name, dtype))
        if hit is not None and hit[0] == sig:
            return hit[1]
        with torch.no_grad():
            folded = [t.to(dtype).contiguous() for t in build()]
        self._cache[(name, dtype)] = (sig, folded)
        return folded

    # ------------------------------------------------------------------ stem
    def stem(self, stems: SensorStems, key: str, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), the single-sensor stem with folded weights."""
        conv = stems.conv(key)
        embed = stems.modality_embed(key)
        pr = stems.projection
        assert conv.bias is not None

        def build() -> list[torch.Tensor]:
            w1 = pr.proj1.weight.double()
            wc = conv.weight.double()
            w_conv = (w1 @ wc.reshape(wc.shape[0], -1)).reshape(wc.shape)
            b_conv = w1 @ (conv.bias.double() + embed.double().reshape(-1))  # type: ignore[union-attr]
            w2, b2 = _fold_norm(pr.norm_input, pr.proj2)
            w_out = pr.proj3.weight.double() @ w2
            b_out = pr.proj3.weight.double() @ b2 + pr.proj3.bias.double()
            return [w_conv, b_conv, w_out, b_out]

        sources = [conv.weight, conv.bias, embed, pr.proj1.weight, pr.norm_input.weight]
        sources += [
            pr.norm_input.bias,
            pr.proj2.weight,
            pr.proj2.bias,
            pr.proj3.weight,
            pr.proj3.bias,
        ]
        dtype = compute_dtype(x, conv.weight.dtype)
        w_conv, b_conv, w_out, b_out = self._get(f"stem:{key}", dtype, sources, build)
        z = F.conv2d(x.to(dtype), w_conv, b_conv, stride=stems.patch_size)
        z = z.flatten(2).transpose(1, 2).float()  # (B, N, A)
        z = F.layer_norm(z, (z.shape[-1],), None, None, pr.norm_input.eps)
        return F.linear(z.to(dtype), w_out, b_out).float()  # (B, N, D)

    # ------------------------------------------------------------------ blocks
    def blocks(self, blocks: nn.ModuleList, num_heads: int, x: torch.Tensor) -> list[torch.Tensor]:
        """Run every block; returns each block's output (B, 1 + N, D) in float32."""
        dtype = compute_dtype(x, x.dtype)
        outs = []
        for i, blk in enumerate(blocks):
            x = self._block(f"block:{i}", blk, num_heads, x, dtype)
            outs.append(x)
        return outs

    def _block(
        self, name: str, blk: Any, heads: int, x: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        attn, mlp = blk.attn, blk.mlp
        n1, n2 = blk.norm1, blk.norm2

        def build() -> list[torch.Tensor]:
            wqkv, bqkv = _fold_norm(n1, attn.qkv)
            wfc1, bfc1 = _fold_norm(n2, mlp.fc1)
            return [wqkv, bqkv, attn.proj.weight, attn.proj.bias, wfc1, bfc1]

        sources = [p for p in blk.parameters()]
        wqkv, bqkv, wproj, bproj, wfc1, bfc1 = self._get(name, dtype, sources, build)
        wfc2, bfc2 = self._get(
            name + ":fc2",
            dtype,
            [mlp.fc2.weight, mlp.fc2.bias],
            lambda: [mlp.fc2.weight, mlp.fc2.bias],
        )
        b, n, d = x.shape
        h = F.layer_norm(x, (d,), None, None, n1.eps).to(dtype)
        qkv = F.linear(h, wqkv, bqkv).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, hd)
        x = x + F.linear(o.transpose(1, 2).reshape(b, n, d), wproj, bproj).float()
        h = F.layer_norm(x, (d,), None, None, n2.eps).to(dtype)
        return x + F.linear(F.gelu(F.linear(h, wfc1, bfc1)), wfc2, bfc2).float()
