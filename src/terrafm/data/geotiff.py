"""In-memory GeoTIFF / PNG encoding and decoding, CRS repair and resampling to the 10 m grid.

Major-TOM stores every band as a complete GeoTIFF file inside a parquet cell (SPEC §5); the
folder source reads the same rasters from disk. Both go through :func:`decode_geotiff`, and both
bring 20 m / 60 m bands onto the 10 m grid with :func:`resample_to`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import Affine

__all__ = [
    "DecodedRaster",
    "decode_geotiff",
    "encode_geotiff",
    "encode_png",
    "repair_crs",
    "resample_to",
]

_EPSG = re.compile(r"^(?:EPSG:)+(\d+)$", re.IGNORECASE)


def repair_crs(crs: str) -> str:
    """Canonical ``EPSG:<code>`` for a CRS string, repairing Major-TOM's ``EPSG:EPSG:32633`` rows.

    Strings that are not EPSG codes (WKT, PROJ) are returned unchanged after stripping blanks.
    """
    s = str(crs).strip()
    m = _EPSG.match(s)
    return f"EPSG:{m.group(1)}" if m else s


@dataclass(frozen=True)
class DecodedRaster:
    """A decoded raster: ``data`` (C, H, W), its CRS, affine transform and nodata value."""

    data: np.ndarray
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None
    descriptions: tuple[str | None, ...]


def encode_geotiff(
    data: np.ndarray,
    crs: str,
    transform: Sequence[float],
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> bytes:
    """A complete single- or multi-band GeoTIFF file as bytes.

    Args:
        data: (H, W) or (C, H, W) array; its dtype is kept.
        crs: CRS string (repaired with :func:`repair_crs`).
        transform: 6-element affine (a, b, c, d, e, f) of this raster's own pixel grid.
        nodata: value stored in the file's nodata tag, if any.
        descriptions: optional band descriptions (band names).
    """
    arr = data[None] if data.ndim == 2 else data
    count, height, width = arr.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": arr.dtype.name,
        "crs": CRS.from_string(repair_crs(crs)),
        "transform": Affine(*transform[:6]),
        "compress": "deflate",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
            if descriptions is not None:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)
        return bytes(mem.read())


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a (3, H, W) or (H, W) uint8 image (used for Major-TOM thumbnails)."""
    arr = rgb[None] if rgb.ndim == 2 else rgb
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(
                driver="PNG",
                width=arr.shape[2],
                height=arr.shape[1],
                count=arr.shape[0],
                dtype="uint8",
            ) as dst:
                dst.write(arr.astype(np.uint8))
            return bytes(mem.read())


def decode_geotiff(blob: bytes) -> DecodedRaster:
    """Decode GeoTIFF bytes (any raster format GDAL reads) into a :class:`DecodedRaster`.

    Raises:
        rasterio.errors.RasterioIOError: when the bytes are not a readable raster (callers turn
            this into a data error naming the file and row group).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(blob) as mem, mem.open() as src:
            return _read_open(src)


def read_raster(path: str) -> DecodedRaster:
    """Read a raster file from disk (GeoTIFF, JP2 ...) into a :class:`DecodedRaster`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return _read_open(src)


def _read_open(src: rasterio.io.DatasetReader) -> DecodedRaster:
    data = src.read()
    crs = src.crs.to_string() if src.crs is not None else None
    t = src.transform
    return DecodedRaster(
        data=data,
        crs=crs,
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        nodata=src.nodata,
        descriptions=tuple(src.descriptions),
    )


def resample_to(x: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resample (C, h, w) or (h, w) to ``size`` = (H, W), area-aligned.

    ``bilinear`` uses half-pixel-centre alignment (``align_corners=False``), the right choice for
    reflectance: each output pixel centre is mapped into the coarse grid and interpolated between
    the four nearest coarse pixel centres. ``nearest`` is for masks and class maps. Integer input
    is resampled in float32 and returned as float32 (bilinear) or its own dtype (nearest).
    """
    if x.shape[-2:] == tuple(size):
        return x
    squeeze = x.ndim == 2
    arr = x[None] if squeeze else x
    if mode == "nearest":
        rows = _nearest_index(arr.shape[-2], size[0])
        cols = _nearest_index(arr.shape[-1], size[1])
        out = arr[:, rows][:, :, cols]
    elif mode == "bilinear":
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]  # (1, C, h, w)
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()
    else:
        raise ValueError(f"resample mode must be 'bilinear' or 'nearest', got {mode!r}")
    return out[0] if squeeze else out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre for nearest-neighbour resampling."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(centres).astype(np.int64), n_in - 1)
