"""Window-exact upsampling of 20 m / 60 m bands onto the 10 m grid (docs/design.md, "Sensors and units").

Sentinel-2 stores bands at 10, 20 and 60 m. The scene is embedded on the finest grid, and a coarser
band is upsampled by its integer factor ``f``. To stream a scene window by window, each output
pixel must get the same value whatever window it is read in, so the mapping is defined on the whole
raster and only evaluated on the window: output pixel ``y`` samples the coarse band at
``u = (y + 0.5) / f - 0.5`` clamped to ``[0, n - 1]`` (PyTorch's ``align_corners=False``
convention, the one the training data path uses). ``nearest`` takes pixel ``y // f``.
Validity is resampled conservatively: an output pixel is valid only if every coarse pixel it
draws from is valid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RESAMPLING", "AxisMap", "axis_map", "upsample"]

RESAMPLING = ("bilinear", "nearest")


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


def axis_map(start: int, count: int, factor: int, n_coarse: int, mode: str) -> AxisMap:
    """Map output pixels ``start .. start + count`` to a coarse axis of ``n_coarse`` pixels.

    Args:
        start: first output (fine) pixel.
        count: number of output pixels (> 0).
        factor: integer coarsening factor of the band (1 = same grid).
        n_coarse: band length in its own pixels.
        mode: ``bilinear`` or ``nearest``.
    """
    if mode not in RESAMPLING:
        raise ValueError(f"resampling must be one of {RESAMPLING}, got {mode!r}")
    y = np.arange(start, start + count, dtype=np.float64)
    if factor == 1 or mode == "nearest":
        i0 = np.minimum(np.floor((y + 0.5) / factor).astype(np.int64), n_coarse - 1)
        return AxisMap(i0, i0, np.zeros(count))
    u = np.clip((y + 0.5) / factor - 0.5, 0.0, n_coarse - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_coarse - 1)
    return AxisMap(i0, i1, u - i0)


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
