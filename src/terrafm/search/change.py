"""Change maps: the per-patch cosine distance between two embedding rasters of one grid.

Both inputs are ``terrafm embed`` GeoTIFFs (one band per feature, NaN = nodata) of the same grid
(size, transform, CRS) made by the same model, weights and layer, e.g. two dates of one area.
The output is a float32 GeoTIFF of ``1 - cos(a, b)`` per pixel (0 = same direction, 2 =
opposite), NaN where either input is nodata; optionally a uint8 mask of ``distance > threshold``
(1 changed, 0 unchanged, 255 nodata). Rasters are processed in strips of rows, so memory does not
depend on the raster size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window as RioWindow

from terrafm.embed.writer import COMPLETE_TAG
from terrafm.errors import ConfigError, DataError
from terrafm.search.tables import Identity, IdentityError

__all__ = ["ChangeError", "ChangeReport", "change_map", "raster_identity"]

MASK_NODATA = 255


class ChangeError(DataError, ValueError):
    """Inputs that cannot be compared (different grids, not embed rasters ...)."""


@dataclass
class ChangeReport:
    valid: int
    pixels: int
    mean: float
    max: float
    changed: int | None


def raster_identity(src: rasterio.io.DatasetReader, name: str) -> Identity:
    """The identity recorded in an embed raster's tags."""
    tags = src.tags()
    if "TERRAFM_MODEL" not in tags:
        raise ChangeError(f"{name}: no TERRAFM_MODEL tag: not written by terrafm embed")
    if COMPLETE_TAG not in tags:
        raise ChangeError(f"{name}: incomplete (the embed run did not finish; rerun it to resume)")
    options = json.loads(tags.get("TERRAFM_OPTIONS", "{}"))
    # Rasters written before the weights digest was tagged: fall back to the checkpoint path.
    weights = tags.get("TERRAFM_WEIGHTS") or f"checkpoint:{tags.get('TERRAFM_CHECKPOINT', '')}"
    sensors = tuple(s for s in tags.get("TERRAFM_SENSORS", "").split(",") if s)
    return Identity(tags["TERRAFM_MODEL"], weights, options.get("layer"), src.count, sensors)


def _check(a: rasterio.io.DatasetReader, b: rasterio.io.DatasetReader, na: str, nb: str) -> None:
    ia, ib = raster_identity(a, na), raster_identity(b, nb)
    diff = []
    if (a.height, a.width) != (b.height, b.width):
        diff.append(f"size {a.height}x{a.width} vs {b.height}x{b.width}")
    if a.transform != b.transform:
        ta, tb = (", ".join(f"{v:.10g}" for v in tuple(t)[:6]) for t in (a.transform, b.transform))
        diff.append(f"transform ({ta}) vs ({tb})")
    if a.crs != b.crs:
        diff.append(f"crs {a.crs} vs {b.crs}")
    if diff:
        raise ChangeError(f"{na} and {nb} are not on the same grid: {'; '.join(diff)}")
    why = ia.mismatch(ib)
    if why:
        raise IdentityError(f"{na} and {nb} come from different models ({why})")


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` along axis 0 of (D, h, w) blocks; NaN where either is non-finite or zero."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dot = np.einsum("dhw,dhw->hw", a64, b64)
    na = np.sqrt(np.einsum("dhw,dhw->hw", a64, a64))
    nb = np.sqrt(np.einsum("dhw,dhw->hw", b64, b64))
    ok = np.isfinite(dot) & np.isfinite(na) & np.isfinite(nb) & (na > 0) & (nb > 0)
    out = np.full(dot.shape, np.nan)
    out[ok] = 1.0 - np.clip(dot[ok] / (na[ok] * nb[ok]), -1.0, 1.0)
    return out.astype(np.float32)


def change_map(
    a: str | Path,
    b: str | Path,
    out: str | Path,
    *,
    threshold: float | None = None,
    mask: str | Path | None = None,
    strip_rows: int = 16,
) -> ChangeReport:
    """Write the cosine-distance GeoTIFF of two embed rasters (and a threshold mask).

    Raises:
        ChangeError: not embed rasters, or different grids. IdentityError: different models,
        weights, layers or widths.
    """
    if mask is not None and threshold is None:
        raise ConfigError("a mask needs a threshold")
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        _check(ra, rb, str(a), str(b))
        profile = {
            "driver": "GTiff",
            "dtype": "float32",
            "count": 1,
            "height": ra.height,
            "width": ra.width,
            "crs": ra.crs,
            "transform": ra.transform,
            "nodata": float("nan"),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        tags = {
            "TERRAFM_CHANGE": "cosine distance 1 - cos(a, b) per patch; NaN where either is nodata",
            "TERRAFM_CHANGE_A": str(a),
            "TERRAFM_CHANGE_B": str(b),
            **{k: v for k, v in ra.tags().items() if k in ("TERRAFM_MODEL", "TERRAFM_WEIGHTS")},
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        total, count, peak, changed = 0.0, 0, -np.inf, 0
        dm = None
        with rasterio.open(out, "w", **profile) as dst:
            dst.update_tags(**tags)
            if mask is not None:
                mprof = {**profile, "dtype": "uint8", "nodata": MASK_NODATA}
                dm = rasterio.open(mask, "w", **mprof)
                dm.update_tags(**tags, TERRAFM_CHANGE_THRESHOLD=str(threshold))
            try:
                for r0 in range(0, ra.height, strip_rows):
                    win = RioWindow(0, r0, ra.width, min(strip_rows, ra.height - r0))
                    d = cosine_distance(ra.read(window=win), rb.read(window=win))
                    dst.write(d, 1, window=win)
                    ok = np.isfinite(d)
                    total += float(d[ok].sum())
                    count += int(ok.sum())
                    if ok.any():
                        peak = max(peak, float(d[ok].max()))
                    if threshold is not None:
                        hit = ok & (d > threshold)
                        changed += int(hit.sum())
                        if dm is not None:
                            m = np.where(ok, hit.astype(np.uint8), MASK_NODATA).astype(np.uint8)
                            dm.write(m, 1, window=win)
            finally:
                if dm is not None:
                    dm.close()
    return ChangeReport(
        count,
        ra.height * ra.width,
        total / count if count else float("nan"),
        peak if count else float("nan"),
        changed if threshold is not None else None,
    )
