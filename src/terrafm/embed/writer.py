"""The patch-embedding GeoTIFF: created fully allocated, written in place, flushed at checkpoints.

One band per feature, float32, NaN = nodata, pixel size 16 x the input's, same CRS, transform =
input transform scaled by 16 (exact). The file is created uncompressed and tiled, and every tile is
allocated (filled with nodata) before the first window is written. Later writes then overwrite
bytes in place and never move the TIFF directory, so a run killed at any moment leaves a readable
file whose already-checkpointed windows are intact; this is what makes resume safe (SPEC §7.6).
Compress the finished file afterwards if needed (``gdal_translate -co COMPRESS=ZSTD``).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window as RioWindow

from terrafm.embed.windows import Window

__all__ = ["COMPLETE_TAG", "EmbeddingWriter", "block_checksum", "output_transform"]

# Tag in the GeoTIFF's metadata written once the run finished; value = the run fingerprint digest.
COMPLETE_TAG = "TERRAFM_EMBED_COMPLETE"
# Output tile side in pixels (GeoTIFF tiles must be multiples of 16). Small, so that a tile of a
# 768-band float32 raster stays under a megabyte.
TILE = 16


def output_transform(transform: Affine, patch: int = 16) -> Affine:
    """Transform of the embedding raster: one pixel per ``patch`` x ``patch`` input pixels."""
    return transform @ Affine.scale(patch)


def block_checksum(block: np.ndarray) -> int:
    """CRC32 of a (D, h, w) float32 block, with every NaN in one canonical bit pattern."""
    b = np.ascontiguousarray(block, dtype=np.float32).copy()
    b[np.isnan(b)] = np.float32("nan")
    return zlib.crc32(b.tobytes())


class EmbeddingWriter:
    """Writes owned window blocks into the embedding GeoTIFF (one thread only).

    Args:
        path: the output ``.tif``.
        dim: number of features (bands).
        height, width: raster size in output pixels.
        crs: the input CRS (WKT) or None.
        transform: the input transform (scaled here by ``patch``).
        tags: metadata tags written at creation (model, options ...).
        patch: model patch size.
    """

    def __init__(
        self,
        path: str | Path,
        dim: int,
        height: int,
        width: int,
        crs: str | None,
        transform: Affine,
        tags: Mapping[str, str],
        patch: int = 16,
    ):
        self.path = Path(path)
        self.profile = {
            "driver": "GTiff",
            "dtype": "float32",
            "count": dim,
            "height": height,
            "width": width,
            "crs": crs,
            "transform": output_transform(transform, patch),
            "nodata": float("nan"),
            "tiled": True,
            "blockxsize": TILE,
            "blockysize": TILE,
            "interleave": "pixel",
            "BIGTIFF": "IF_SAFER",
        }
        self.tags = dict(tags)
        self._dst: rasterio.io.DatasetWriter | None = None

    # ------------------------------------------------------------------ lifecycle
    def create(self) -> None:
        """Create the file with every tile allocated and filled with nodata."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(self.path, "w", **self.profile) as dst:
            dst.update_tags(**self.tags)
            dst.descriptions = tuple(f"emb_{i:04d}" for i in range(self.profile["count"]))
        self._fsync()

    def matches(self) -> str | None:
        """None if the existing file has this writer's layout, else what differs."""
        try:
            with rasterio.open(self.path) as src:
                got = {
                    "count": src.count,
                    "height": src.height,
                    "width": src.width,
                    "dtype": src.dtypes[0],
                    "transform": src.transform,
                }
                crs_ok = (src.crs is None and self.profile["crs"] is None) or (
                    src.crs is not None
                    and self.profile["crs"] is not None
                    and src.crs == rasterio.crs.CRS.from_user_input(self.profile["crs"])
                )
        except rasterio.errors.RasterioError as e:
            return f"unreadable ({e})"
        want = {k: self.profile[k] for k in got}
        diff = [k for k in got if got[k] != want[k]]
        if not crs_ok:
            diff.append("crs")
        return f"differs in {diff}" if diff else None

    def open(self) -> None:
        if self._dst is None:
            self._dst = rasterio.open(self.path, "r+")

    def write(self, w: Window, block: np.ndarray) -> int:
        """Write a window's owned (D, h, w) block; returns its checksum."""
        self.open()
        assert self._dst is not None
        h, wd = w.own_shape
        assert block.shape[1:] == (h, wd), (block.shape, w.own_shape)
        self._dst.write(block, window=RioWindow(w.own_col0, w.own_row0, wd, h))
        return block_checksum(block)

    def read(self, w: Window) -> np.ndarray:
        """Read back a window's owned block as it is on disk."""
        h, wd = w.own_shape
        with rasterio.open(self.path) as src:
            return src.read(window=RioWindow(w.own_col0, w.own_row0, wd, h))

    def flush(self) -> None:
        """Make everything written so far durable (close, fsync); the next write reopens."""
        if self._dst is not None:
            self._dst.close()
            self._dst = None
        self._fsync()

    def finish(self, tags: Mapping[str, str]) -> None:
        """Flush and add final tags (the completion marker)."""
        self.flush()
        with rasterio.open(self.path, "r+") as dst:
            dst.update_tags(**tags)
        self._fsync()

    def _fsync(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_tags(path: str | Path) -> dict[str, str]:
    """The metadata tags of an existing GeoTIFF (empty if it cannot be read)."""
    try:
        with rasterio.open(path) as src:
            return dict(src.tags())
    except rasterio.errors.RasterioError:
        return {}
