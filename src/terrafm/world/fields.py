"""Spatial building blocks of the synthetic world: random fields, parcels, lines, resampling.

Everything here is plain numpy on (H, W) grids and takes an explicit ``numpy.random.Generator``, so
the world is reproducible by seed ("built-in default"). Real 10 m scenes show
neighbouring-pixel correlation of 0.7–0.99 (docs/design.md, "Calibration of the synthetic world"); these fields are how the generator gets it:
smooth Gaussian random fields for land-cover regions and moisture, power-law (fractal) fields for
terrain and texture, oriented strips for agricultural parcels, polylines for rivers and roads.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "block_mean",
    "dilate",
    "fractal_fields",
    "meander",
    "polyline_distance",
    "rescale01",
    "smooth_fields",
    "strip_parcels",
]

# Fields are drawn on a grid this much larger than the cell and cropped, so the periodic wrap of
# the FFT never shows as matching opposite edges.
_PAD = 1.25


def _padded(size: int) -> int:
    n = int(np.ceil(size * _PAD))
    return n + (n % 2)


def _radial_frequency(n: int) -> np.ndarray:
    """|k| in cycles per pixel on the rfft2 grid of an n x n array, (n, n // 2 + 1)."""
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    return np.sqrt(fy * fy + fx * fx)


def _filtered_noise(
    rng: np.random.Generator, count: int, size: int, gain: np.ndarray
) -> np.ndarray:
    """``count`` white-noise fields filtered by ``gain`` (on the padded rfft2 grid), z-scored."""
    n = _padded(size)
    noise = rng.standard_normal((count, n, n), dtype=np.float32)
    spec = np.fft.rfft2(noise) * gain.astype(np.float32)  # (count, n, n // 2 + 1)
    f = np.fft.irfft2(spec, s=(n, n))[:, :size, :size].astype(np.float32)
    f -= f.mean(axis=(1, 2), keepdims=True)
    f /= f.std(axis=(1, 2), keepdims=True) + 1e-6
    return f


def _upsample(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, pixel-centre-aligned upsampling of (C, h, h) to (C, size, size)."""
    h = x.shape[-1]
    pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * (h / size) - 0.5, 0, h - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, h - 1)
    w = (pos - i0).astype(np.float32)
    rows = x[:, i0] * (1 - w)[None, :, None] + x[:, i1] * w[None, :, None]
    return rows[:, :, i0] * (1 - w) + rows[:, :, i1] * w


def smooth_fields(
    rng: np.random.Generator, count: int, size: int, scale: float | np.ndarray
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random fields with a Gaussian correlation of ``scale`` px.

    Broad fields (scale of 6 px and more) are drawn on a coarser grid and upsampled bilinearly,
    which keeps the cost per field low; the result is smooth at that scale either way.

    Args:
        rng: random generator.
        count: number of independent fields.
        size: side of the square fields.
        scale: correlation length in pixels, one value or one per field.

    Returns:
        float32 (count, size, size).
    """
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (count,))
    factors = np.maximum(1, np.floor(scales / 3.0)).astype(np.int64)
    out = np.empty((count, size, size), dtype=np.float32)
    for f in np.unique(factors):
        sel = np.flatnonzero(factors == f)
        low = -(-size // int(f))
        n = _padded(low)
        k = _radial_frequency(n)[None]  # (1, n, n // 2 + 1)
        s = (scales[sel] / f)[:, None, None]
        # A Gaussian kernel of std s px has transfer exp(-2 pi^2 s^2 k^2).
        fields = _filtered_noise(rng, len(sel), low, np.exp(-2.0 * np.pi**2 * (s * k) ** 2))
        if f > 1:
            fields = _upsample(fields, size)
            fields -= fields.mean(axis=(1, 2), keepdims=True)
            fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-6
        out[sel] = fields
    return out


def fractal_fields(
    rng: np.random.Generator, count: int, size: int, beta: float, min_scale: float = 0.0
) -> np.ndarray:
    """Power-law ("fractal") random fields with spectrum ``|k|^-beta``, z-scored.

    ``beta`` near 3 gives terrain-like fields, near 1.5 rough texture. ``min_scale`` (px) damps
    detail finer than that scale.

    Returns:
        float32 (count, size, size).
    """
    n = _padded(size)
    k = _radial_frequency(n)
    k[0, 0] = 1.0 / n
    gain = k ** (-beta / 2.0)
    gain[0, 0] = 0.0
    if min_scale > 0:
        gain = gain * np.exp(-2.0 * np.pi**2 * (min_scale * k) ** 2)
    return _filtered_noise(rng, count, size, gain[None])


def rescale01(x: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1] (a constant array becomes zeros)."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def strip_parcels(
    rng: np.random.Generator,
    size: int,
    width: tuple[float, float],
    length: tuple[float, float],
    warp: np.ndarray | None = None,
) -> np.ndarray:
    """Agricultural-style parcels: rotated strips cut into segments, each with its own id.

    Strips have random widths in ``width`` px along a random orientation; each strip is cut into
    fields of its own random length in ``length`` px, starting at its own offset, so parcels look
    like fields rather than a checkerboard. An optional ``warp`` field (2, H, W) in px bends the
    boundaries.

    Returns:
        int32 (size, size) parcel ids, 0..n-1.
    """
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if warp is not None:
        yy, xx = yy + warp[0], xx + warp[1]
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    u -= u.min()
    v -= v.min()
    span = float(max(u.max(), v.max())) + 1.0
    n_strips = int(span / width[0]) + 2
    u_edges = np.concatenate([[0.0], np.cumsum(rng.uniform(*width, n_strips))])
    strip = np.clip(np.searchsorted(u_edges, u, side="right") - 1, 0, n_strips - 1)
    # Each strip is cut into fields of its own length, starting at its own offset.
    seg_len = rng.uniform(*length, n_strips).astype(np.float32)
    offset = rng.uniform(0, length[1], n_strips).astype(np.float32)
    seg = np.floor((v + offset[strip]) / seg_len[strip]).astype(np.int64)
    ids = strip.astype(np.int64) * (int(span / length[0]) + 3) + seg
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(size, size).astype(np.int32)


def meander(
    rng: np.random.Generator, size: int, wiggle: float = 0.25, steps: int = 48
) -> np.ndarray:
    """A meandering polyline crossing the square from one edge to the opposite one.

    Returns:
        float32 (steps, 2) vertices as (row, col) in pixels.
    """
    t = np.linspace(-0.1, 1.1, steps)
    side = rng.uniform(0.1, 0.9, 2) * size
    start, end = side
    along = t * size
    # Sum of a few sines of random phase: a smooth, non-repeating meander.
    k = rng.uniform(1.0, 4.0, 3)
    phase = rng.uniform(0, 2 * np.pi, 3)
    amp = wiggle * size * rng.dirichlet(np.ones(3))
    across = (
        start
        + (end - start) * t
        + (amp[:, None] * np.sin(np.pi * k[:, None] * t + phase[:, None])).sum(0)
    )
    pts = np.stack([along, across], axis=1)
    if rng.random() < 0.5:
        pts = pts[:, ::-1]
    return pts.astype(np.float32)


def polyline_distance(points: np.ndarray, size: int, max_dist: float = 16.0) -> np.ndarray:
    """Distance in pixels from every pixel centre of a size x size grid to a polyline.

    Only distances up to ``max_dist`` are computed (each segment is visited inside its bounding
    box grown by ``max_dist``); farther pixels get ``inf``.

    Args:
        points: (N, 2) vertices (row, col).
        size: grid side.
        max_dist: the largest distance the caller needs.

    Returns:
        float32 (size, size).
    """
    best = np.full((size, size), np.inf, dtype=np.float32)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        r0 = max(int(np.floor(min(y0, y1) - max_dist)), 0)
        r1 = min(int(np.ceil(max(y0, y1) + max_dist)) + 1, size)
        c0 = max(int(np.floor(min(x0, x1) - max_dist)), 0)
        c1 = min(int(np.ceil(max(x0, x1) + max_dist)) + 1, size)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        dy, dx = y1 - y0, x1 - x0
        denom = max(float(dy * dy + dx * dx), 1e-6)
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / denom, 0.0, 1.0)
        d = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
        np.minimum(best[r0:r1, c0:c1], d, out=best[r0:r1, c0:c1])
    return best


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a (H, W) mask by a square of half-side ``radius`` (separable max)."""
    out = mask.copy()
    for axis in (0, 1):
        acc = out.copy()
        for r in range(1, radius + 1):
            acc |= np.roll(out, r, axis=axis) & _edge_guard(out.shape, r, axis, True)
            acc |= np.roll(out, -r, axis=axis) & _edge_guard(out.shape, r, axis, False)
        out = acc
    return out


def _edge_guard(shape: tuple[int, ...], r: int, axis: int, forward: bool) -> np.ndarray:
    """Mask that drops the pixels ``np.roll`` wrapped around the edge."""
    g = np.ones(shape, dtype=bool)
    idx = [slice(None), slice(None)]
    idx[axis] = slice(0, r) if forward else slice(shape[axis] - r, None)
    g[tuple(idx)] = False
    return g


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor`` x ``factor`` blocks of (..., H, W); H, W divisible."""
    if factor == 1:
        return x
    *lead, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"block_mean: shape {x.shape} not divisible by {factor}")
    return x.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))
