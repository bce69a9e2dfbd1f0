"""A compiled separable resize for the CPU view path: taps in, z-scored views out.

The shard loader's CPU path cuts every view of a sample from its read window (the stored integers,
or float32 where invalid pixels were filled). PyTorch's antialiased float resize walks the taps one
pixel at a time and returns a new tensor that must then be z-scored into the batch; this kernel
instead takes each axis's taps (``(size, K)`` input indices and weights, e.g.
:func:`terrafm.data.batch_multicrop._composed_taps`) and writes the z-scored result straight into
one or two destination arrays. Both passes are written as sums of whole rows scaled by a tap weight
(``y[i, :] += w * x[j, :]``), contiguous in memory, which the compiler vectorises; the intermediate
is transposed once so the second pass is of the same form. Any filter whose taps are given
(antialiased or plain bilinear, composed with an upsampling from a coarser grid, a horizontal flip
as reversed column taps) runs through it. Results equal ``R @ x[c] @ Cᵀ`` (dense weights) to float32
rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

EMPTY_OUT = np.empty((0, 0, 0), np.float32)  # "no second destination"


@njit(cache=True, nogil=True, boundscheck=False)
def _resize_into(
    x: np.ndarray,
    r_idx: np.ndarray,
    r_w: np.ndarray,
    c_idx: np.ndarray,
    c_w: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    chan: np.ndarray,
    out1: np.ndarray,
    out2: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through its results
    """``out[chan[c]] = scale[c] * (R @ x[c] @ Cᵀ) + shift[c]`` for every channel ``c``.

    Args:
        x: (C, H, W), C-contiguous: float32 or the stored integers (converted as read).
        r_idx, r_w: (S_rows, K_r) int64 row indices into ``x`` and float32 weights (R's taps).
        c_idx, c_w: (S_cols, K_c) column taps (C's).
        scale, shift: (C,) float32 per-channel affine map applied to the result.
        chan: (C,) int64 destination channel of each channel of ``x``.
        out1, out2: (C_out, S_rows, S_cols) float32 destinations; ``out2`` may be
            :data:`EMPTY_OUT` (written only when it has channels).
    """
    n_ch = x.shape[0]
    s_rows, k_rows = r_idx.shape
    s_cols, k_cols = c_idx.shape
    lo = c_idx.min()
    width = c_idx.max() + 1 - lo
    tmp = np.empty((s_rows, width), np.float32)
    tmp_t = np.empty((width, s_rows), np.float32)
    res_t = np.empty((s_cols, s_rows), np.float32)
    two = out2.shape[0] > 0
    for c in range(n_ch):
        xc = x[c]
        # rows: tmp[i, :] = sum_k w[i, k] * x[idx[i, k], lo:lo + width]
        for i in range(s_rows):
            row = tmp[i]
            src = xc[r_idx[i, 0], lo : lo + width]
            wt = r_w[i, 0]
            for j in range(width):
                row[j] = wt * np.float32(src[j])
            for k in range(1, k_rows):
                wt = r_w[i, k]
                if wt != 0.0:
                    src = xc[r_idx[i, k], lo : lo + width]
                    for j in range(width):
                        row[j] += wt * np.float32(src[j])
        for i0 in range(0, s_rows, 16):  # transpose in tiles
            for j0 in range(0, width, 16):
                for i in range(i0, min(i0 + 16, s_rows)):
                    for j in range(j0, min(j0 + 16, width)):
                        tmp_t[j, i] = tmp[i, j]
        # columns, on the transposed rows: res_t[j, :] = sum_k w[j, k] * tmp_t[idx[j, k] - lo, :]
        for j in range(s_cols):
            row = res_t[j]
            src = tmp_t[c_idx[j, 0] - lo]
            wt = c_w[j, 0]
            for i in range(s_rows):
                row[i] = wt * src[i]
            for k in range(1, k_cols):
                wt = c_w[j, k]
                if wt != 0.0:
                    src = tmp_t[c_idx[j, k] - lo]
                    for i in range(s_rows):
                        row[i] += wt * src[i]
        a = scale[c]
        b = shift[c]
        dst = chan[c]
        for j0 in range(0, s_cols, 16):  # transpose back, z-scored, into the destinations
            for i0 in range(0, s_rows, 16):
                for j in range(j0, min(j0 + 16, s_cols)):
                    for i in range(i0, min(i0 + 16, s_rows)):
                        v = res_t[j, i] * a + b
                        out1[dst, i, j] = v
                        if two:
                            out2[dst, i, j] = v


# the compiled dispatcher, typed as the plain function it behaves as
resize_into: Callable[..., None] = _resize_into
