"""The patch-embedding GeoTIFF: created fully allocated, written in place, flushed at checkpoints.

One band per feature, float32, NaN = nodata, pixel size 16 x the input's, same CRS, transform =
input transform scaled by 16 (exact). The file is created uncompressed and tiled, and every tile is
allocated (filled with nodata) before the first window is written. Later writes then overwrite
bytes in place and never move the TIFF directory, so a run killed at any moment leaves a readable
file whose already-checkpointed windows are intact; this is what makes resume safe (docs/design.md, "What users need").
Compress the finished file afterwards if needed (``gdal_translate -co COMPRESS=ZSTD``).

Windows own blocks that do not line up with the file's 16 x 16 tiles (a 224 px window owns 14 x 14
output pixels), and GDAL pays a read-modify-write of every tile a misaligned block touches: about
15 ms per TerraFM-B window, most of the pipeline's overhead on a 2-core machine. So the writer keeps
the tile rows being filled in memory (a row of tiles is ``16 x width x D`` floats, 34 MB for a full
Sentinel-2 tile with TerraFM-B; windows arrive row-major, so one or two rows are live) and writes a
tile row in one aligned call once every pixel of it has arrived. :meth:`flush` also writes the rows
still being filled (their missing pixels are whatever the file holds: nodata, or an earlier run's
checkpointed windows, since a row buffer starts from the file's content), so a checkpoint covers
every window written before it.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass
class _TileRow:
    """A row of output tiles being filled: (D, rows, width) values, pixels still to come, and
    whether it holds values not yet written to the file."""

    buf: np.ndarray
    missing: int
    dirty: bool = False


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
        self._rows: dict[int, _TileRow] = {}  # tile row index -> its buffer
        # True once this writer created the file: every row not buffered is still all nodata
        self._fresh = False

    # ------------------------------------------------------------------ lifecycle
    def create(self) -> None:
        """Create the file with every tile allocated and filled with nodata."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(self.path, "w", **self.profile) as dst:
            dst.update_tags(**self.tags)
            dst.descriptions = tuple(f"emb_{i:04d}" for i in range(self.profile["count"]))
        self._fsync()
        self._fresh = True

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
        """Write a window's owned (D, h, w) block; returns its checksum.

        The block lands in the in-memory tile rows it covers; a row that is complete goes to the
        file at once, the others at the next :meth:`flush`.
        """
        h, wd = w.own_shape
        assert block.shape[1:] == (h, wd), (block.shape, w.own_shape)
        r = w.own_row0
        while r < w.own_row1:
            t = r // TILE
            stop = min(w.own_row1, (t + 1) * TILE)
            row = self._row(t)
            row.buf[:, r - t * TILE : stop - t * TILE, w.own_col0 : w.own_col1] = block[
                :, r - w.own_row0 : stop - w.own_row0
            ]
            row.missing -= (stop - r) * wd
            row.dirty = True
            if row.missing <= 0:
                self._write_row(t, row.buf)
                del self._rows[t]
            r = stop
        return block_checksum(block)

    def _row(self, t: int) -> _TileRow:
        """The buffer of tile row ``t``, started from what the file holds there."""
        row = self._rows.get(t)
        if row is None:
            r0, n = t * TILE, min(TILE, self.profile["height"] - t * TILE)
            shape = (self.profile["count"], n, self.profile["width"])
            if self._fresh:  # a complete row is never buffered again: the file holds nodata here
                buf = np.full(shape, np.nan, dtype=np.float32)
            else:
                self.open()
                assert self._dst is not None
                buf = self._dst.read(window=RioWindow(0, r0, shape[2], n))
            row = self._rows[t] = _TileRow(buf, n * self.profile["width"])
        return row

    def _write_row(self, t: int, buf: np.ndarray) -> None:
        self.open()
        assert self._dst is not None
        self._dst.write(buf, window=RioWindow(0, t * TILE, buf.shape[2], buf.shape[1]))

    def read(self, w: Window) -> np.ndarray:
        """Read back a window's owned block as it is on disk."""
        h, wd = w.own_shape
        with rasterio.open(self.path) as src:
            return src.read(window=RioWindow(w.own_col0, w.own_row0, wd, h))

    def flush(self) -> None:
        """Make everything written so far durable (close, fsync); the next write reopens."""
        for t, row in sorted(self._rows.items()):
            if row.dirty:  # rows still being filled keep their buffer (it mirrors the file)
                self._write_row(t, row.buf)
                row.dirty = False
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
