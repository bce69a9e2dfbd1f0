"""In-memory GeoTIFF / PNG encoding and decoding, CRS repair and resampling to the 10 m grid.

Major-TOM stores every band as a complete GeoTIFF file inside a parquet cell (docs/design.md, "Pretraining data"); the
folder source reads the same rasters from disk. Both go through :func:`decode_geotiff`, and both
bring 20 m / 60 m bands onto the 10 m grid with :func:`resample_to`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.windows import Window

__all__ = [
    "DecodedRaster",
    "decode_geotiff",
    "encode_geotiff",
    "encode_png",
    "needed_window",
    "open_bytes",
    "read_raster",
    "read_window",
    "repair_crs",
    "resample_to",
    "resample_window",
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


def read_window(
    src: rasterio.io.DatasetReader,
    out_size: tuple[int, int],
    window: tuple[int, int, int, int],
    mode: str = "bilinear",
) -> np.ndarray:
    """Read ``window`` of the ``out_size`` grid from an open raster, decoding only what is needed.

    The raster covers the same footprint as the ``out_size`` grid at its own resolution (a 20 m
    band of a 10 m grid); only the input rows/columns the window needs are decoded.

    Returns:
        (C, height, width): float32 for bilinear, the raster's dtype for nearest.
    """
    full = (src.height, src.width)
    need = needed_window(full, out_size, window, mode)
    data = src.read(window=Window(need[1], need[0], need[3], need[2]))  # (C, h, w)
    return _resample_full(data, full, out_size, window, mode, (need[0], need[1]))


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


@contextmanager
def open_bytes(blob: bytes) -> Iterator[rasterio.io.DatasetReader]:
    """Open raster bytes (a GeoTIFF from a parquet cell) as a rasterio dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(blob) as mem, mem.open() as src:
            yield src
