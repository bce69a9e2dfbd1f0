"""What every pretraining source yields: cells, tiles and per-sensor tile arrays (docs/design.md, "Objective", "Pretraining data").

A *cell* is a Major-TOM grid cell (or a scene of a GeoTIFF folder); it is cut into *tiles* (four
534 px tiles per 1068 px cell). A source lists its cells (:class:`CellInfo`) and reads one tile of
one cell for the requested sensors as :class:`SensorTile` arrays on the 10 m grid.
:func:`finish_tile` turns them into model input (normalised) after the quality rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from terrafm.data.landcover import LandCover
from terrafm.data.skips import SampleError
from terrafm.sensors import normalize

__all__ = [
    "CellInfo",
    "NativeGroup",
    "SensorTile",
    "TileSource",
    "finish_tile",
    "processing_baseline",
    "tile_windows",
]


@dataclass(frozen=True)
class NativeGroup:
    """The bands of one native resolution of a tile, as the source stores them (not resampled).

    Attributes:
        factor: one native pixel spans ``factor`` x ``factor`` pixels of the 10 m grid (S2: 1 for
            the 10 m bands, 2 for the 20 m bands, 6 for the 60 m bands).
        bands: indices of the group's bands in the sensor's stem order.
        data: (len(bands), T // factor + 2 * halo, T // factor + 2 * halo) float32 in the
            sensor's model unit.
        halo: native pixels kept beyond the tile on each side (the neighbouring tile's, or the
            edge pixel repeated at the cell edge): what bilinear resampling onto the tile's 10 m
            pixels reads (docs/data.md, "Native resolution").
    """

    factor: int
    bands: tuple[int, ...]
    data: np.ndarray
    halo: int = 0


@dataclass(frozen=True)
class SensorTile:
    """One sensor's pixels of one tile on the 10 m grid.

    Attributes:
        data: (C, T, T) float32 in the sensor's model unit (S2 DN with any processing-baseline
            offset removed, S1 dB), bands in the sensor's stem order.
        valid: (T, T) bool, False for no-data, cloud (when masked) and non-finite pixels.
        native: when the reader was asked for it, the same bands at their native resolution,
            one :class:`NativeGroup` per resolution (``data`` is then their resampling).
    """

    data: np.ndarray
    valid: np.ndarray
    native: tuple[NativeGroup, ...] | None = None


@dataclass(frozen=True)
class CellInfo:
    """A cell a source can read.

    Attributes:
        name: grid cell (``282D_485L``) or scene name.
        sensors: sensors this cell has.
        n_tiles: number of tiles it is cut into.
        landcover: cell land-cover facts, if known.
        tile_classes: dominant WorldCover code per tile (from a WorldCover raster), if known.
    """

    name: str
    sensors: tuple[str, ...]
    n_tiles: int
    landcover: LandCover | None = None
    tile_classes: tuple[int, ...] | None = None

    def tile_class(self, tile: int) -> int:
        """Dominant WorldCover code of a tile (0 when unknown)."""
        if self.tile_classes is not None:
            return self.tile_classes[tile]
        return self.landcover.dominant if self.landcover is not None else 0


class TileSource(Protocol):
    """A readable collection of cells (Major-TOM products, a GeoTIFF folder)."""

    name: str

    def cells(self) -> list[CellInfo]:
        """Every readable cell, in a fixed order."""
        ...

    def read_tile(
        self, cell: int, tile: int, sensors: Sequence[str]
    ) -> tuple[dict[str, SensorTile], list[SampleError]]:
        """Read ``tile`` of ``cell`` for ``sensors``; per-sensor failures come back as errors."""
        ...


def tile_windows(
    height: int, width: int, tile: int, overlap_edges: bool = False
) -> list[tuple[int, int]]:
    """Top-left corners of ``tile`` x ``tile`` windows cutting a ``height`` x ``width`` grid.

    Non-overlapping, row-major. The remainder at the right/bottom edge is dropped, or, with
    ``overlap_edges``, covered by one more window flush with the edge. A grid smaller than the
    tile gives no window.
    """

    def starts(n: int) -> list[int]:
        s = list(range(0, n - tile + 1, tile))
        if overlap_edges and s and s[-1] + tile < n:
            s.append(n - tile)
        return s

    return [(r, c) for r in starts(height) for c in starts(width)]


_BASELINE = re.compile(r"_N(\d{4})_")


def processing_baseline(product_id: str) -> int | None:
    """Sentinel-2 processing baseline of a product name (``..._N0400_...`` -> 400), if present."""
    m = _BASELINE.search(product_id)
    return int(m.group(1)) if m else None


def finish_tile(sensor: str, tile: SensorTile, where: str, max_invalid: float) -> torch.Tensor:
    """Quality rules, then normalisation: a (C, T, T) float32 model input.

    Non-finite pixels join the invalid ones. A tile whose valid pixels are all gone
    (``all_nodata``) or whose invalid share exceeds ``max_invalid`` (``too_invalid``) raises
    :class:`SampleError`. Remaining invalid pixels are set to 0 after z-scoring, i.e. to the
    sensor's mean, so no NaN or fill value reaches the model.
    """
    data = tile.data
    if data.ndim != 3 or data.shape[-2:] != tile.valid.shape:
        raise SampleError(
            "mismatch", where, f"{sensor}: data {data.shape} vs mask {tile.valid.shape}"
        )
    finite = np.isfinite(data).all(axis=0)
    valid = tile.valid & finite
    n_valid = int(valid.sum())
    if n_valid == 0:
        what = "all pixels non-finite" if not finite.any() else "all pixels no-data/cloud"
        raise SampleError("all_nodata", where, f"{sensor}: {what}")
    bad = 1.0 - n_valid / valid.size
    if bad > max_invalid:
        nan_part = 1.0 - float(finite.mean())
        raise SampleError(
            "too_invalid",
            where,
            f"{sensor}: {bad:.0%} invalid pixels (non-finite {nan_part:.0%}) > max_invalid {max_invalid:.0%}",
        )
    data = np.where(valid[None], data, 0.0).astype(np.float32)  # no NaN enters the z-score
    x = normalize(data, sensor)  # (C, T, T)
    if n_valid < valid.size:
        x.mul_(torch.from_numpy(valid))  # invalid pixels -> 0, the sensor's mean
    if not torch.isfinite(x.sum()):  # e.g. values overflowing float32 after z-scoring
        raise SampleError("non_finite", where, f"{sensor}: non-finite values after normalisation")
    return x
