"""TerraFM's curation of pretraining cells into tiles (docs/design.md, "Pretraining data").

Cells without the requested sensors are already dropped by the sources. Here ocean cells are thinned
to a fraction (2 % by default; "ocean" is :func:`terrafm.data.landcover.is_ocean`), and every kept
cell is expanded into its tiles, each with its land-cover class and sampling stratum
(dominant WorldCover class x climate zone x region).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from terrafm.data.landcover import UNKNOWN, is_ocean
from terrafm.data.tiles import CellInfo

__all__ = ["TileRef", "TileTable", "curate", "keep_fraction"]

Stratum = tuple[int, str, str]


@dataclass(frozen=True)
class TileRef:
    """One tile of the curated set.

    Attributes:
        source: index of its source.
        cell: index of its cell in the source's :meth:`cells`.
        tile: tile number within the cell.
        name: ``<cell name>/<tile>`` for messages.
        sensors: sensors the cell has.
        landcover: dominant WorldCover code of the tile (0 when unknown).
        stratum: (land-cover class, climate zone, region) used by the sampler.
    """

    source: int
    cell: int
    tile: int
    name: str
    sensors: tuple[str, ...]
    landcover: int
    stratum: Stratum


class TileTable(Sequence[TileRef]):
    """The curated tiles as compact arrays (millions of tiles cost a few bytes each).

    Indexing gives a :class:`TileRef`; :attr:`landcover` and :attr:`stratum_ids` are arrays over
    all tiles, :attr:`strata` the distinct strata.
    """

    def __init__(
        self,
        cells: Sequence[Sequence[CellInfo]],
        source: np.ndarray,
        cell: np.ndarray,
        tile: np.ndarray,
        landcover: np.ndarray,
        stratum_ids: np.ndarray,
        strata: Sequence[Stratum],
    ) -> None:
        self._cells = cells
        self.source, self.cell, self.tile = source, cell, tile
        self.landcover, self.stratum_ids, self.strata = landcover, stratum_ids, list(strata)

    def __len__(self) -> int:
        return len(self.tile)

    @overload
    def __getitem__(self, i: int) -> TileRef: ...
    @overload
    def __getitem__(self, i: slice) -> list[TileRef]: ...
    def __getitem__(self, i: int | slice) -> TileRef | list[TileRef]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"tile {i} out of range ({len(self)} tiles)")
        src, c, t = int(self.source[i]), int(self.cell[i]), int(self.tile[i])
        info = self._cells[src][c]
        stratum = self.strata[int(self.stratum_ids[i])]
        return TileRef(src, c, t, f"{info.name}/{t}", info.sensors, int(self.landcover[i]), stratum)


def keep_fraction(name: str, fraction: float, seed: int) -> bool:
    """Deterministic Bernoulli(``fraction``) decision per cell name (order-independent)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def curate(
    sources_cells: Sequence[Sequence[CellInfo]],
    *,
    ocean_keep: float = 0.02,
    ocean_min_water: float = 0.95,
    seed: int = 0,
) -> tuple[TileTable, Counter[str]]:
    """Tiles of every kept cell, and a report of what was dropped.

    Args:
        sources_cells: the cells of each source (``source.cells()``).
        ocean_keep: fraction of ocean cells kept (TerraFM: 2 %).
        ocean_min_water: water fraction above which a water-dominated cell counts as ocean.
        seed: seed of the ocean thinning (the choice is per cell name, independent of order).
    """
    cols: dict[str, list[int]] = {k: [] for k in ("source", "cell", "tile", "landcover", "stratum")}
    strata: dict[Stratum, int] = {}
    report: Counter[str] = Counter()
    for si, cells in enumerate(sources_cells):
        for ci, cell in enumerate(cells):
            lc = cell.landcover
            if lc is not None and is_ocean(lc, ocean_min_water):
                report["ocean_cells"] += 1
                if not keep_fraction(cell.name, ocean_keep, seed):
                    report["ocean_cells_dropped"] += 1
                    continue
            climate = lc.climate_zone if lc else UNKNOWN
            region = lc.region if lc else UNKNOWN
            report["cells_kept"] += 1
            for t in range(cell.n_tiles):
                cls = cell.tile_class(t)
                for key, v in (("source", si), ("cell", ci), ("tile", t), ("landcover", cls)):
                    cols[key].append(v)
                cols["stratum"].append(strata.setdefault((cls, climate, region), len(strata)))
    report["tiles"] = len(cols["tile"])
    table = TileTable(
        sources_cells,
        np.asarray(cols["source"], np.int32),
        np.asarray(cols["cell"], np.int64),
        np.asarray(cols["tile"], np.int32),
        np.asarray(cols["landcover"], np.int16),
        np.asarray(cols["stratum"], np.int32),
        list(strata),
    )
    return table, report
