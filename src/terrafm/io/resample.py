"""Resampling between grids of one footprint: the one implementation in terrafm.

Sentinel-2 stores bands at 10, 20 and 60 m; training, evaluation, embedding and the built-in world
bring them onto the 10 m grid with these functions. Pixel centres are aligned
(``align_corners=False``, PyTorch's convention): output pixel ``y`` of an ``n_out`` axis samples
an ``n_in`` axis at ``u = (y + 0.5) * n_in / n_out - 0.5``, clamped to ``[0, n_in - 1]``;
``nearest`` takes pixel ``floor((y + 0.5) * n_in / n_out)``. The mapping is defined on the whole
raster and only evaluated on a window, so a pixel gets the same value whatever window it is read
in; that is what lets a scene be streamed window by window (docs/design.md, "Sensors and units").

- :func:`axis_weights`, :func:`resample_window`, :func:`needed_window`, :func:`resample_to`: whole
  rasters and windows of them (the training readers, the world, the task writers).
- :func:`axis_map`, :func:`upsample`: the same sampling evaluated on a block, with validity
  resampled conservatively (an output pixel is valid only if every coarse pixel it draws from is
  valid), for the scene reader (:mod:`terrafm.io.scene`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RESAMPLING",
    "AxisMap",
    "axis_map",
    "axis_weights",
    "needed_window",
    "resample_to",
    "resample_window",
    "upsample",
]

RESAMPLING = ("bilinear", "nearest")


def axis_weights(
    n_in: int, n_out: int, start: int, count: int, mode: str = "bilinear"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of output pixels ``start .. start+count`` along one axis.

    The input axis (``n_in`` px) and the output axis (``n_out`` px) span the same footprint; pixel
    centres are aligned (``align_corners=False``): output pixel ``y`` samples the input at
    ``u = (y + 0.5) * n_in / n_out - 0.5``, clamped to ``[0, n_in - 1]`` (PyTorch's convention).

    Returns:
        ``(i0, i1, lam)``: the output is ``(1 - lam) * x[i0] + lam * x[i1]``. For ``nearest``,
        ``i1 == i0`` and ``lam == 0``.
    """
    y = np.arange(start, start + count, dtype=np.float64)
    scale = n_in / n_out
    if mode == "nearest":
        i0 = np.minimum(np.floor((y + 0.5) * scale).astype(np.int64), n_in - 1)
        return i0, i0, np.zeros(count)
    if mode != "bilinear":
        raise ValueError(f"resample mode must be 'bilinear' or 'nearest', got {mode!r}")
    u = np.clip((y + 0.5) * scale - 0.5, 0.0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, u - i0


def resample_window(
    x: np.ndarray,
    out_size: tuple[int, int],
    window: tuple[int, int, int, int],
    mode: str = "bilinear",
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Resample part of a raster onto a window of a finer (or equal) output grid.

    Args:
        x: (C, h, w) input pixels; it may itself be a window of a larger raster of ``full`` size
            starting at ``offset`` = (row, col) (what :func:`needed_window` asks to read).
        out_size: (H, W) of the full output grid covering the same footprint as the full input.
        window: (row, col, height, width) of the output window to produce.
        mode: ``bilinear`` (reflectance, backscatter) or ``nearest`` (masks, class maps).
        offset: where ``x`` starts in the full input raster.

    Returns:
        float32 (C, height, width) for bilinear, ``x.dtype`` for nearest.
    """
    full = (x.shape[-2] + offset[0], x.shape[-1] + offset[1])
    return _resample_full(x, full, out_size, window, mode, offset)


def _resample_full(
    x: np.ndarray,
    full: tuple[int, int],
    out_size: tuple[int, int],
    window: tuple[int, int, int, int],
    mode: str,
    offset: tuple[int, int],
) -> np.ndarray:
    r0, c0, hh, ww = window
    ri0, ri1, rl = axis_weights(full[0], out_size[0], r0, hh, mode)
    ci0, ci1, cl = axis_weights(full[1], out_size[1], c0, ww, mode)
    ri0, ri1, ci0, ci1 = ri0 - offset[0], ri1 - offset[0], ci0 - offset[1], ci1 - offset[1]
    if mode == "nearest":
        return x[:, ri0][:, :, ci0]
    xf = x.astype(np.float32, copy=False)
    rows = xf[:, ri0] * (1 - rl)[None, :, None] + xf[:, ri1] * rl[None, :, None]  # (C, hh, w)
    out = rows[:, :, ci0] * (1 - cl) + rows[:, :, ci1] * cl  # (C, hh, ww)
    return out.astype(np.float32)


def needed_window(
    full: tuple[int, int], out_size: tuple[int, int], window: tuple[int, int, int, int], mode: str
) -> tuple[int, int, int, int]:
    """(row, col, height, width) of the input pixels needed to resample ``window`` of the output."""
    r0, c0, hh, ww = window
    ri0, ri1, _ = axis_weights(full[0], out_size[0], r0, hh, mode)
    ci0, ci1, _ = axis_weights(full[1], out_size[1], c0, ww, mode)
    r_lo, r_hi = int(ri0.min()), int(ri1.max())
    c_lo, c_hi = int(ci0.min()), int(ci1.max())
    return r_lo, c_lo, r_hi - r_lo + 1, c_hi - c_lo + 1


def resample_to(x: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resample all of (C, h, w) or (h, w) onto a ``size`` = (H, W) grid of the same footprint.

    Bilinear with aligned pixel centres (``align_corners=False``), the choice for reflectance and
    backscatter; ``nearest`` for masks and class maps. Identical to
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` when upsampling.
    """
    if x.shape[-2:] == tuple(size):
        return x
    arr = x[None] if x.ndim == 2 else x
    out = resample_window(arr, size, (0, 0, size[0], size[1]), mode)
    return out[0] if x.ndim == 2 else out


class AxisMap:
    """Source indices and weights of ``count`` output pixels along one axis.

    Attributes:
        i0, i1: coarse indices (relative to ``base``) of the two neighbours of each output pixel.
        lam: weight of ``i1`` (0 for nearest).
        base, stop: the coarse range ``[base, stop)`` to read.
    """

    def __init__(self, i0: np.ndarray, i1: np.ndarray, lam: np.ndarray):
        self.base = int(i0.min())
        self.stop = int(i1.max()) + 1
        self.i0 = i0 - self.base
        self.i1 = i1 - self.base
        self.lam = lam.astype(np.float32)


def axis_map(start: int, count: int, n_in: int, n_out: int, mode: str) -> AxisMap:
    """Map output pixels ``start .. start + count`` of an ``n_out`` axis to an ``n_in`` axis.

    The same sampling as :func:`axis_weights`; an axis of equal length is the identity.

    Args:
        start: first output (fine) pixel.
        count: number of output pixels (> 0).
        n_in: input (band) axis length in its own pixels.
        n_out: output-axis length the whole input axis covers (``n_in * factor`` for an integer
            coarsening).
        mode: ``bilinear`` or ``nearest``.
    """
    if mode not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {mode!r}")
    if n_in == n_out:
        mode = "nearest"  # the identity: no weights to apply
    return AxisMap(*axis_weights(n_in, n_out, start, count, mode))


def _along(x: np.ndarray, m: AxisMap, axis: int) -> np.ndarray:
    a = np.take(x, m.i0, axis=axis)
    if not m.lam.any():
        return a
    b = np.take(x, m.i1, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    lam = m.lam.reshape(shape)
    return a * (1 - lam) + b * lam


def upsample(
    data: np.ndarray, valid: np.ndarray, rows: AxisMap, cols: AxisMap
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a coarse block read at ``[rows.base, rows.stop) x [cols.base, cols.stop)``.

    Args:
        data: (C, h_c, w_c) float32 coarse values.
        valid: (h_c, w_c) bool, True where every band of the block is valid.
        rows, cols: the axis maps the block was read for.

    Returns:
        ``(values (C, h, w) float32, valid (h, w) bool)`` on the output pixels.
    """
    out = _along(_along(data, rows, 1), cols, 2)  # (C, h, w)
    v = valid[rows.i0] & valid[rows.i1]  # (h, w_c)
    v = v[:, cols.i0] & v[:, cols.i1]  # (h, w)
    return out.astype(np.float32, copy=False), v
