"""Major-TOM as a tile source: products paired by grid cell, land cover attached (docs/design.md, "Pretraining data").

``<root>/S2L2A``, ``<root>/S2L1C`` and ``<root>/S1RTC`` are paired by ``grid_cell``; each cell is
split into ``tiles_per_side``² tiles (four 534 px tiles of a 1068 px cell). Land cover comes from
``<root>/landcover.parquet`` and, when present, ``<root>/worldcover/<grid_cell>.tif`` (contract A).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from terrafm.data.landcover import (
    LandCover,
    landcover_from_map,
    read_landcover_table,
    tile_classes,
)
from terrafm.data.majortom import SENSOR_PRODUCT, MajorTomProduct
from terrafm.data.skips import SampleError
from terrafm.data.tiles import CellInfo, SensorTile
from terrafm.io.geotiff import decode_geotiff
from terrafm.sensors import get_sensor

__all__ = ["MajorTomSource"]

log = logging.getLogger("terrafm.data")


class MajorTomSource:
    """Paired Major-TOM products under one root, read tile by tile.

    Args:
        root: folder (or fsspec URL) holding the product folders and land-cover files.
        sensors: sensor keys to read (``s1``, ``s2_l1c``, ``s2_l2a``).
        products: optional sensor -> product folder overrides (e.g. ``hf://datasets/Major-TOM/
            Core-S2L2A``); default ``<root>/<PRODUCT>``.
        storage_options: fsspec options for remote roots.
        require_all: keep only cells that have every requested sensor (TerraFM's curation);
            otherwise keep cells with at least one.
        max_cloud_cover: drop S2 rows whose metadata ``cloud_cover`` (percent) exceeds this.
        max_nodata: drop rows whose metadata ``nodata`` fraction exceeds this.
        mask_clouds: mark ``cloud_mask`` pixels invalid.
        harmonize: remove the +1000 DN offset of S2 processing baseline >= 04.00.
        tiles_per_side: 2 cuts a cell of S px into four S/2 px tiles.
    """

    def __init__(
        self,
        root: str | Path,
        sensors: Sequence[str],
        *,
        products: Mapping[str, str | Path] | None = None,
        storage_options: dict[str, object] | None = None,
        require_all: bool = True,
        max_cloud_cover: float | None = None,
        max_nodata: float | None = None,
        mask_clouds: bool = True,
        harmonize: bool = True,
        tiles_per_side: int = 2,
    ) -> None:
        for s in sensors:
            get_sensor(s)
        self.name = str(root).rstrip("/")
        self.sensors = tuple(sensors)
        self.storage_options = dict(storage_options or {})
        self.require_all = require_all
        self.mask_clouds = mask_clouds
        self.harmonize = harmonize
        self.tiles_per_side = tiles_per_side
        self.report: Counter[str] = Counter()
        paths = {
            s: str((products or {}).get(s, f"{self.name}/{SENSOR_PRODUCT[s]}")) for s in sensors
        }
        self.products = {
            s: MajorTomProduct(p, SENSOR_PRODUCT[s], self.storage_options) for s, p in paths.items()
        }
        rows = {
            s: self._usable_rows(s, p.metadata, max_cloud_cover, max_nodata)
            for s, p in self.products.items()
        }
        self._rows, self._cells = self._pair(rows)

    def _usable_rows(
        self, sensor: str, meta: pd.DataFrame, max_cloud: float | None, max_nodata: float | None
    ) -> dict[str, int]:
        keep = np.ones(len(meta), dtype=bool)
        if max_cloud is not None and "cloud_cover" in meta:
            over = meta["cloud_cover"].to_numpy(dtype=float) > max_cloud
            self.report[f"{sensor}_cloudy_rows"] += int(over.sum())
            keep &= ~over
        if max_nodata is not None and "nodata" in meta:
            over = meta["nodata"].to_numpy(dtype=float) > max_nodata
            self.report[f"{sensor}_nodata_rows"] += int(over.sum())
            keep &= ~over
        out: dict[str, int] = {}
        for i in np.flatnonzero(keep):
            cell = str(meta["grid_cell"].iat[i])
            if cell in out:
                self.report[f"{sensor}_duplicate_rows"] += 1  # keep the first row of a cell
                continue
            out[cell] = int(i)
        return out

    def _pair(self, rows: dict[str, dict[str, int]]) -> tuple[list[dict[str, int]], list[CellInfo]]:
        names = set().union(*(r.keys() for r in rows.values())) if rows else set()
        table = self._landcover_table()
        k = self.tiles_per_side
        out_rows, cells = [], []
        for name in sorted(names):
            have = {s: r[name] for s, r in rows.items() if name in r}
            if self.require_all and len(have) < len(self.sensors):
                self.report["cells_missing_sensor"] += 1
                continue
            lc, classes = self._landcover(name, table)
            out_rows.append(have)
            cells.append(
                CellInfo(name, tuple(s for s in self.sensors if s in have), k * k, lc, classes)
            )
        self.report["cells_paired"] = len(cells)
        return out_rows, cells

    def _landcover_table(self) -> dict[str, LandCover]:
        path = f"{self.name}/landcover.parquet"
        fs, fpath = fsspec.core.url_to_fs(path, **self.storage_options)
        if not fs.exists(fpath):
            return {}
        return read_landcover_table(path, self.storage_options)

    def _landcover(
        self, name: str, table: dict[str, LandCover]
    ) -> tuple[LandCover | None, tuple[int, ...] | None]:
        lc = table.get(name)
        path = f"{self.name}/worldcover/{name}.tif"
        fs, fpath = fsspec.core.url_to_fs(path, **self.storage_options)
        if not fs.exists(fpath):
            return lc, None
        with fs.open(fpath, "rb") as f:
            cmap = decode_geotiff(f.read()).data[0]  # (S, S) ESA codes on the cell's 10 m grid
        k, size = self.tiles_per_side, cmap.shape[0] // self.tiles_per_side
        windows = [((t // k) * size, (t % k) * size, size, size) for t in range(k * k)]
        if lc is None:
            lc = landcover_from_map(name, cmap)
        return lc, tile_classes(cmap, windows)

    def cells(self) -> list[CellInfo]:
        return self._cells

    #: ``read_tile(..., native=True)`` also returns each band at its native resolution.
    native_reads = True

    def read_tile(
        self, cell: int, tile: int, sensors: Sequence[str], native: bool = False
    ) -> tuple[dict[str, SensorTile], list[SampleError]]:
        """Read one tile of one cell for ``sensors``, all on one 10 m grid.

        The first sensor read fixes the grid (its cell size); the others are resampled onto it.
        With ``native``, each :class:`SensorTile` also holds its bands at native resolution.
        """
        rows, name = self._rows[cell], self._cells[cell].name
        out: dict[str, SensorTile] = {}
        errors: list[SampleError] = []
        grid: int | None = None
        for s in sorted(sensors, key=lambda s: s == "s1"):  # an S2 product fixes the grid first
            if s not in rows:
                errors.append(
                    SampleError("missing_sensor", f"{self.name} cell {name}", f"no {s} row")
                )
                continue
            try:
                out[s], grid = self.products[s].read_tile(
                    rows[s],
                    tile,
                    self.tiles_per_side,
                    grid,
                    self.mask_clouds,
                    self.harmonize,
                    native=native,
                )
            except SampleError as e:
                errors.append(e)
        return out, errors
