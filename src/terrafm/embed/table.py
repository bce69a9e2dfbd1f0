"""The per-window GeoParquet table: footprint, CLS embedding, source files (docs/design.md, "What users need").

One row per embedded window; ``sensors`` lists the sensors the window was embedded from (fewer
than the scene's where a sensor had no data, see docs/embed.md). ``geometry`` is the window footprint as WKB in the raster's CRS, and
the file carries GeoParquet 1.1 ``geo`` metadata (PROJJSON CRS, bbox, geometry types) so GeoPandas,
GDAL/OGR, DuckDB and QGIS read it as a layer. Rows are written in parts at each checkpoint of a run
(``TABLE.parquet.parts/``) and merged into the final file at the end, atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from rasterio.crs import CRS
from rasterio.transform import Affine

from terrafm.embed.windows import Window
from terrafm.outputs import atomic_write

__all__ = ["GEOPARQUET_VERSION", "TableWriter", "footprint", "geo_metadata", "table_schema"]

GEOPARQUET_VERSION = "1.1.0"


def footprint(w: Window, transform: Affine) -> shapely.Polygon:
    """The window's outline in CRS coordinates (exact for rotated grids too)."""
    corners = [
        (w.col, w.row),
        (w.col + w.width, w.row),
        (w.col + w.width, w.row + w.height),
        (w.col, w.row + w.height),
    ]
    return shapely.Polygon([transform @ c for c in corners])


def table_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("window_id", pa.int32()),
            ("row", pa.int32()),
            ("col", pa.int32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("valid_fraction", pa.float32()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("sources", pa.list_(pa.string())),
            ("sensors", pa.list_(pa.string())),
            ("geometry", pa.binary()),
        ]
    )


def geo_metadata(crs_wkt: str | None, bbox: Sequence[float] | None) -> dict[str, object]:
    """GeoParquet ``geo`` metadata for the ``geometry`` column (``bbox`` None for no rows)."""
    column: dict[str, object] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        # null = unknown CRS (an absent key would mean OGC:CRS84).
        "crs": CRS.from_wkt(crs_wkt).to_dict(projjson=True) if crs_wkt else None,
        "edges": "planar",
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {"geometry": column},
    }


class TableWriter:
    """Collects rows and writes them as parts, then merges the parts into the final table.

    Args:
        path: the final ``.parquet``.
        dim: embedding width.
        crs: raster CRS (WKT) or None.
        transform: input raster transform (footprints are computed from it).
        sources: the scene's input files (stored on every row).
        extra_metadata: JSON-able run description stored under the ``terrafm`` key.
    """

    def __init__(
        self,
        path: str | Path,
        dim: int,
        crs: str | None,
        transform: Affine,
        sources: Sequence[str],
        extra_metadata: Mapping[str, object] | None = None,
    ):
        self.path = Path(path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.dim = dim
        self.crs = crs
        self.transform = transform
        self.sources = [str(s) for s in sources]
        self.extra = dict(extra_metadata or {})
        self._rows: list[tuple[Window, float, np.ndarray, tuple[str, ...]]] = []

    def add(
        self, w: Window, valid_fraction: float, cls: np.ndarray, sensors: Sequence[str] = ()
    ) -> None:
        """Queue a window's row; ``sensors``: the sensors it was embedded from."""
        row = (w, float(valid_fraction), np.asarray(cls, dtype=np.float32), tuple(sensors))
        self._rows.append(row)

    def _table(self, rows: list[tuple[Window, float, np.ndarray, tuple[str, ...]]]) -> pa.Table:
        emb = np.stack([r[2] for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        geoms = [shapely.to_wkb(footprint(r[0], self.transform)) for r in rows]
        cols = {
            "window_id": [r[0].index for r in rows],
            "row": [r[0].row for r in rows],
            "col": [r[0].col for r in rows],
            "height": [r[0].height for r in rows],
            "width": [r[0].width for r in rows],
            "valid_fraction": [r[1] for r in rows],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), self.dim),
            "sources": [self.sources] * len(rows),
            "sensors": [list(r[3]) for r in rows],
            "geometry": geoms,
        }
        return pa.table(cols, schema=table_schema(self.dim))

    def next_part_number(self) -> int:
        """One past the highest part on disk, so a part is never overwritten (even an orphan)."""
        numbers = [int(p.stem.split("-")[1]) for p in self.parts_dir.glob("part-*.parquet")]
        return max(numbers, default=-1) + 1

    def flush_part(self, number: int) -> str | None:
        """Write pending rows as part ``number``; returns its file name (None if nothing pending)."""
        if not self._rows:
            return None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{number:05d}.parquet"
        with atomic_write(self.parts_dir / name) as tmp:
            pq.write_table(self._table(self._rows), tmp)
        self._rows = []
        return name

    def merge(self, parts: Sequence[str]) -> pa.Table:
        """Merge parts (later rows win for a repeated window) into the final GeoParquet file."""
        tables = [pq.read_table(self.parts_dir / p, schema=table_schema(self.dim)) for p in parts]
        table = pa.concat_tables(tables) if tables else self._table([])
        ids = table.column("window_id").to_numpy()
        last = {int(i): k for k, i in enumerate(ids)}  # a recomputed window's newest row
        keep = sorted(last.values(), key=lambda k: ids[k])
        table = table.take(pa.array(keep, type=pa.int64()))
        bounds = None
        if len(table):
            bounds = shapely.total_bounds(shapely.from_wkb(table.column("geometry").to_pylist()))
        meta = {
            b"geo": json.dumps(geo_metadata(self.crs, bounds)).encode(),
            b"terrafm": json.dumps(self.extra).encode(),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        with atomic_write(self.path) as tmp:
            pq.write_table(table, tmp)
        return table

    def clear_parts(self) -> None:
        shutil.rmtree(self.parts_dir, ignore_errors=True)
