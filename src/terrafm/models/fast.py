"""Exact fast path of the single-sensor stem for inference.

The published stem computes ``proj3(proj2(LN(proj1(conv(x) + e))))``. Two pairs of consecutive
affine maps fold into one each:

- ``proj1 . (conv + e)`` is one convolution with weight ``W1 Wc`` and bias ``W1 (bc + e)``;
- ``proj3 . proj2`` is one linear map with weight ``W3 W2`` and bias ``W3 b2 + b3``.

That removes two of the four ``A x A``-sized matrix products per token (A = 2304 for TerraFM-B).
The folded weights are cached per sensor and rebuilt whenever a source parameter changes (its
storage or version counter), so loading or editing weights afterwards stays correct. The model uses
this only in ``eval()`` under ``torch.inference_mode()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from terrafm.models.patch_embed import SensorStems

__all__ = ["FastStem"]


def _signature(*tensors: torch.Tensor) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


class FastStem:
    """Folded-weight cache for :class:`SensorStems` (not an ``nn.Module``: it owns no parameters)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple, tuple[torch.Tensor, ...]]] = {}

    def _folded(self, stems: SensorStems, key: str) -> tuple[torch.Tensor, ...]:
        conv = stems.conv(key)
        embed = stems.modality_embed(key)
        pr = stems.projection
        assert conv.bias is not None
        sig = _signature(
            conv.weight,
            conv.bias,
            embed,
            pr.proj1.weight,
            pr.proj2.weight,
            pr.proj2.bias,
            pr.proj3.weight,
            pr.proj3.bias,
        )
        hit = self._cache.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        with torch.no_grad():
            w1 = pr.proj1.weight.double()
            wc = conv.weight.double()
            a = wc.shape[0]
            w_conv = (w1 @ wc.reshape(a, -1)).reshape(wc.shape)
            b_conv = w1 @ (conv.bias.double() + embed.double().reshape(-1))
            w_out = pr.proj3.weight.double() @ pr.proj2.weight.double()
            b_out = pr.proj3.weight.double() @ pr.proj2.bias.double() + pr.proj3.bias.double()
            dtype = conv.weight.dtype
            folded = tuple(t.to(dtype).clone() for t in (w_conv, b_conv, w_out, b_out))
        self._cache[key] = (sig, folded)
        return folded

    def __call__(self, stems: SensorStems, key: str, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), equal to the single-sensor stem up to float rounding."""
        w_conv, b_conv, w_out, b_out = self._folded(stems, key)
        z = F.conv2d(x, w_conv, b_conv, stride=stems.patch_size)
        z = z.flatten(2).transpose(1, 2)  # (B, N, A)
        ln = stems.projection.norm_input
        z = F.layer_norm(z, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        return F.linear(z, w_out, b_out)  # (B, N, D)

    def clear(self) -> None:
        self._cache.clear()
