"""PCA-RGB preview of an embedding raster (docs/design.md, "What users need").

The first three principal components of the valid pixels' feature vectors, each stretched between
its 2nd and 98th percentile, shown as red, green and blue; nodata is transparent. Both passes
stream the raster in row strips, so memory is that of one strip plus the (D x D) covariance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window as RioWindow

from terrafm.outputs import atomic_write

__all__ = ["PCA", "fit_pca", "pca_preview", "write_preview"]

# Rows per strip: bounded so that a strip of a 768-band raster stays around 100 MB.
_STRIP_BYTES = 96 * 2**20


@dataclass
class PCA:
    """Principal axes of a set of vectors.

    Attributes:
        mean: (D,) mean vector.
        components: (k, D) unit axes, by decreasing variance; each signed so that its largest
            loading is positive (a deterministic choice of the arbitrary sign).
        variance: (k,) variance along each axis.
        count: number of vectors fitted.
    """

    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    count: int

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, k)."""
        return (x - self.mean) @ self.components.T


def _strips(src: rasterio.io.DatasetReader) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row0, pixels (h*w, D) float64, valid (h*w,) bool) for consecutive row strips."""
    rows = max(1, _STRIP_BYTES // max(1, src.width * src.count * 4))
    for r in range(0, src.height, rows):
        h = min(rows, src.height - r)
        block = src.read(window=RioWindow(0, r, src.width, h))  # (D, h, w)
        x = block.reshape(src.count, -1).T.astype(np.float64)  # (h*w, D)
        yield r, x, np.isfinite(x).all(axis=1)


def fit_pca(path: str | Path, k: int = 3) -> PCA:
    """PCA of the valid pixels of an embedding raster, in one streaming pass.

    Raises:
        ValueError: fewer than two valid pixels.
    """
    with rasterio.open(path) as src:
        d = src.count
        n = 0
        s = np.zeros(d)
        ss = np.zeros((d, d))
        shift: np.ndarray | None = None  # first valid pixel: centring keeps the sums well scaled
        for _, x, ok in _strips(src):
            x = x[ok]
            if not len(x):
                continue
            if shift is None:
                shift = x[0].copy()
            x = x - shift
            n += len(x)
            s += x.sum(0)
            ss += x.T @ x
    if n < 2 or shift is None:
        raise ValueError(f"{path}: fewer than two valid pixels, no PCA preview possible")
    mu = s / n
    cov = (ss - n * np.outer(mu, mu)) / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:k]
    comps = evecs[:, order].T  # (k, D)
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    return PCA(mu + shift, comps, np.maximum(evals[order], 0.0), n)


def pca_preview(
    path: str | Path, pca: PCA | None = None, clip: tuple[float, float] = (2, 98)
) -> np.ndarray:
    """An (H, W, 4) uint8 RGBA image of the first three components; alpha 0 at nodata."""
    pca = pca or fit_pca(path)
    with rasterio.open(path) as src:
        proj = np.full((src.height * src.width, 3), np.nan, dtype=np.float32)
        for r, x, ok in _strips(src):
            start = r * src.width
            idx = np.flatnonzero(ok) + start
            proj[idx, : len(pca.components)] = pca.transform(x[ok])
        shape = (src.height, src.width)
    valid = np.isfinite(proj[:, 0])
    rgb = np.zeros((len(proj), 3), dtype=np.float32)
    for c in range(min(3, len(pca.components))):
        v = proj[valid, c]
        lo, hi = np.percentile(v, clip) if len(v) else (0.0, 1.0)
        rgb[:, c] = np.clip((proj[:, c] - lo) / max(hi - lo, 1e-12), 0, 1)
    rgba = np.zeros((len(proj), 4), dtype=np.uint8)
    rgba[:, :3] = np.round(np.nan_to_num(rgb) * 255).astype(np.uint8)
    rgba[:, 3] = np.where(valid, 255, 0)
    return rgba.reshape(*shape, 4)


def write_preview(raster: str | Path, png: str | Path) -> Path:
    """Write the PCA-RGB preview of ``raster`` to ``png`` (atomically)."""
    from matplotlib.image import imsave

    img = pca_preview(raster)
    png = Path(png)
    with atomic_write(png) as tmp:
        imsave(tmp, img, format="png")
    return png
