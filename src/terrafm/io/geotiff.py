"""GeoTIFF / PNG encoding and decoding, CRS repair and window reads onto the 10 m grid.

Major-TOM stores every band as a complete GeoTIFF file inside a parquet cell (docs/design.md,
"Pretraining data"); the folder source reads the same rasters from disk. Both go through
:func:`decode_geotiff` / :func:`read_window`, and both bring 20 m / 60 m bands onto the 10 m grid
with :mod:`terrafm.io.resample`, the one resampling used by training, evaluation, embedding and
the built-in world.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import Affine
from rasterio.windows import Window

from terrafm.io.resample import _resample_full, needed_window
from terrafm.outputs import atomic_write

__all__ = [
    "DecodedRaster",
    "decode_geotiff",
    "encode_geotiff",
    "encode_png",
    "open_bytes",
    "read_raster",
    "read_window",
    "repair_crs",
    "write_geotiff",
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


def write_geotiff(
    path: str | Path,
    data: np.ndarray,
    crs: str | CRS | None = None,
    transform: Affine | Sequence[float] | None = None,
    nodata: float | None = None,
    names: Sequence[str] | None = None,
    atomic: bool = True,
) -> Path:
    """Write (C, H, W) or (H, W) pixels as an uncompressed GeoTIFF with band names.

    Uncompressed: task chips are small and read back many times. ``crs`` and ``transform`` are
    optional (a chip without georeferencing is written without the warning). With ``atomic`` the
    file appears under its name only once complete (:func:`terrafm.outputs.atomic_write`); a
    writer that renames a whole folder into place can pass ``atomic=False``.
    """
    path = Path(path)
    arr = data[None] if data.ndim == 2 else data
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": arr.shape[1],
        "width": arr.shape[2],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "nodata": nodata,
    }
    if crs is not None and transform is not None:
        profile["crs"] = CRS.from_string(crs) if isinstance(crs, str) else crs
        profile["transform"] = transform if isinstance(transform, Affine) else Affine(*transform)

    def _write(target: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(arr)
                for i, name in enumerate(names or [], start=1):
                    dst.set_band_description(i, name)

    path.parent.mkdir(parents=True, exist_ok=True)
    if atomic:
        with atomic_write(path) as tmp:
            _write(tmp)
    else:
        _write(path)
    return path


@contextmanager
def open_bytes(blob: bytes) -> Iterator[rasterio.io.DatasetReader]:
    """Open raster bytes (a GeoTIFF from a parquet cell) as a rasterio dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(blob) as mem, mem.open() as src:
            yield src
