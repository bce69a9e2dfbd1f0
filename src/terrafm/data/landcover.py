"""Per-cell land-cover metadata: ESA WorldCover class, histogram, climate zone, region (SPEC §4–5).

Used for curation (ocean cells), stratified sampling and the dual-centring loss's class label; never
as a model input. Read from ``<root>/landcover.parquet`` (contract A), or computed from a
WorldCover raster ``<root>/worldcover/<grid_cell>.tif`` when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from terrafm.checkpoint import atomic_write

__all__ = [
    "OCEAN_CLASS",
    "WORLDCOVER_CLASSES",
    "LandCover",
    "histogram",
    "is_ocean",
    "landcover_from_map",
    "write_landcover",
]

# ESA WorldCover codes, in the order of the histogram column (SPEC §5).
WORLDCOVER_CLASSES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
OCEAN_CLASS = 80  # permanent water bodies; WorldCover does not separate sea from lakes
UNKNOWN = "unknown"


@dataclass(frozen=True)
class LandCover:
    """Land-cover facts of one grid cell (or tile).

    Attributes:
        grid_cell: Major-TOM cell name.
        dominant: ESA WorldCover code of the most frequent class.
        hist: fraction of each class of :data:`WORLDCOVER_CLASSES` (sums to 1 over valid pixels).
        climate_zone: e.g. a Köppen code (``Cfb``), or ``unknown``.
        region: world region, or ``unknown``.
    """

    grid_cell: str
    dominant: int
    hist: tuple[float, ...]
    climate_zone: str = UNKNOWN
    region: str = UNKNOWN

    @property
    def water_fraction(self) -> float:
        return float(self.hist[WORLDCOVER_CLASSES.index(OCEAN_CLASS)])


def is_ocean(lc: LandCover, min_water: float = 0.95) -> bool:
    """The TerraFM curation's "ocean cell" (explicit choice, SPEC §5).

    A cell is ocean when its dominant class is 80 (permanent water) **and** water covers more than
    ``min_water`` of it, or its region is literally ``ocean``. Coastal and lake cells with land
    are kept as ordinary cells.
    """
    if lc.region.lower() == "ocean":
        return True
    return lc.dominant == OCEAN_CLASS and lc.water_fraction > min_water


def histogram(class_map: np.ndarray) -> tuple[float, ...]:
    """Class fractions of a WorldCover code map over :data:`WORLDCOVER_CLASSES`.

    Pixels with other codes (0 = no data) are ignored; an all-no-data map gives all zeros.
    """
    counts = np.array([(class_map == c).sum() for c in WORLDCOVER_CLASSES], dtype=np.float64)
    total = counts.sum()
    return tuple(float(v) for v in (counts / total if total > 0 else counts))


def landcover_from_map(
    grid_cell: str, class_map: np.ndarray, climate_zone: str = UNKNOWN, region: str = UNKNOWN
) -> LandCover:
    """A :class:`LandCover` computed from a WorldCover code map (any size)."""
    hist = histogram(class_map)
    dominant = WORLDCOVER_CLASSES[int(np.argmax(hist))] if sum(hist) > 0 else 0
    return LandCover(grid_cell, dominant, hist, climate_zone, region)


def write_landcover(root: str | Path, records: Sequence[LandCover]) -> Path:
    """Write ``<root>/landcover.parquet`` with the contract A columns; returns its path."""
    for r in records:
        if len(r.hist) != len(WORLDCOVER_CLASSES):
            raise ValueError(
                f"cell {r.grid_cell!r}: hist needs {len(WORLDCOVER_CLASSES)} fractions"
            )
    table = pa.table(
        {
            "grid_cell": pa.array([r.grid_cell for r in records], pa.string()),
            "worldcover_dominant": pa.array([r.dominant for r in records], pa.int64()),
            "worldcover_hist": pa.array([list(r.hist) for r in records], pa.list_(pa.float64())),
            "climate_zone": pa.array([r.climate_zone for r in records], pa.string()),
            "region": pa.array([r.region for r in records], pa.string()),
        }
    )
    path = Path(root) / "landcover.parquet"
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
    return path
