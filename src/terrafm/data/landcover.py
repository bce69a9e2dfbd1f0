"""Per-cell land-cover metadata: ESA WorldCover class, histogram, climate zone, region (docs/design.md, "Objective", "Pretraining data").

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

from terrafm.errors import DataError
from terrafm.outputs import atomic_write

__all__ = [
    "OCEAN_CLASS",
    "WORLDCOVER_CLASSES",
    "LandCover",
    "histogram",
    "is_ocean",
    "landcover_from_map",
    "read_landcover_table",
    "tile_classes",
    "write_landcover",
]

# ESA WorldCover codes, in the order of the histogram column (docs/design.md, "Pretraining data").
WORLDCOVER_CLASSES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
OCEAN_CLASS = 80  # permanent water bodies; WorldCover does not separate sea from lakes
UNKNOWN = "unknown"


class LandCoverError(DataError, ValueError):
    """A land-cover table that cannot be read (names the file and what is wrong)."""


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
    """The TerraFM curation's "ocean cell" (explicit choice, docs/design.md, "Pretraining data").

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


def read_landcover_table(
    path: str, storage_options: dict[str, object] | None = None
) -> dict[str, LandCover]:
    """Read a contract-A ``landcover.parquet`` (local path or fsspec URL) into cell -> LandCover.

    Raises:
        ValueError: missing columns or a histogram of the wrong length (naming the file and cell).
    """
    import fsspec

    try:
        with fsspec.open(path, "rb", **(storage_options or {})) as f:
            table = pq.read_table(f)
    except FileNotFoundError:
        raise LandCoverError(f"{path}: land-cover table not found") from None
    except (pa.ArrowException, OSError) as e:
        raise LandCoverError(
            f"{path}: not a parquet file, or a truncated one ({' '.join(str(e).split())})"
        ) from e
    need = {"grid_cell", "worldcover_dominant", "worldcover_hist"}
    if not need <= set(table.column_names):
        raise LandCoverError(f"{path}: missing columns {sorted(need - set(table.column_names))}")
    d = table.to_pydict()
    n = table.num_rows
    climate = d.get("climate_zone", [UNKNOWN] * n)
    region = d.get("region", [UNKNOWN] * n)
    out = {}
    for i in range(n):
        cell, hist = str(d["grid_cell"][i]), d["worldcover_hist"][i]
        if hist is None or len(hist) != len(WORLDCOVER_CLASSES):
            raise LandCoverError(f"{path}: cell {cell!r} has a worldcover_hist of the wrong length")
        out[cell] = LandCover(
            cell,
            int(d["worldcover_dominant"][i]),
            tuple(float(v) for v in hist),
            str(climate[i] or UNKNOWN),
            str(region[i] or UNKNOWN),
        )
    return out


def tile_classes(
    class_map: np.ndarray, windows: Sequence[tuple[int, int, int, int]]
) -> tuple[int, ...]:
    """Dominant WorldCover code of each (row, col, height, width) window of a code map (0: none)."""
    out = []
    for r, c, h, w in windows:
        hist = histogram(class_map[r : r + h, c : c + w])
        out.append(WORLDCOVER_CLASSES[int(np.argmax(hist))] if sum(hist) > 0 else 0)
    return tuple(out)
