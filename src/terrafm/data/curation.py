"""TerraFM's curation of pretraining cells into tiles (SPEC §5).

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

from terrafm.data.landcover import UNKNOWN, is_ocean
from terrafm.data.tiles import CellInfo

__all__ = ["TileRef", "curate", "keep_fraction"]

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
) -> tuple[list[TileRef], Counter[str]]:
    """Tiles of every kept cell, and a report of what was dropped.

    Args:
        sources_cells: the cells of each source (``source.cells()``).
        ocean_keep: fraction of ocean cells kept (TerraFM: 2 %).
        ocean_min_water: water fraction above which a water-dominated cell counts as ocean.
        seed: seed of the ocean thinning (the choice is per cell name, independent of order).
    """
    refs: list[TileRef] = []
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
                refs.append(
                    TileRef(
                        si, ci, t, f"{cell.name}/{t}", cell.sensors, cls, (cls, climate, region)
                    )
                )
    report["tiles"] = len(refs)
    return refs, report
