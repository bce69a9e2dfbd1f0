"""Queries against a search index: what to look for, and the hits as GeoParquet and score maps.

A query is one or more *positives*: windows of an embed table, or places (points, polygons, a
GeoJSON file, a GeoTIFF mask) resolved to the indexed windows whose footprints they touch. The
query vector is the mean of the positives' unit embeddings, normalised again. A window of a table
that is not in the index (another date, another sensor: an S1-only embedding against an S2 or
fused index) may be used when it comes from the same model, weights and layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from terrafm.embed.table import geo_metadata
from terrafm.errors import ConfigError
from terrafm.outputs import atomic_write
from terrafm.search.index import LONLAT, SearchIndex, normalize
from terrafm.search.tables import IdentityError, open_table

__all__ = [
    "Query",
    "QueryError",
    "load_places",
    "places_query",
    "score_maps",
    "window_query",
    "write_hits",
]

# A GeoTIFF of example places is turned into points at the centres of its nonzero pixels; above
# this many, a fixed random subset is used (the windows they fall in are what matters).
MAX_MASK_POINTS = 20_000


class QueryError(ConfigError):
    """A query that cannot be resolved (no window found, bad geometry ...)."""


@dataclass
class Query:
    """A query vector, the indexed windows it was made from (empty for outside windows) and how
    many embeddings were averaged into it."""

    vector: np.ndarray
    positives: np.ndarray
    sensors: tuple[str, ...]
    description: str
    count: int


def _mean(vectors: np.ndarray) -> np.ndarray:
    return normalize(normalize(vectors).mean(axis=0))


def window_query(index: SearchIndex, windows: Sequence[tuple[str, int]]) -> Query:
    """Positives given as ``(table, window_id)``: tables may be indexed or not, same model."""
    vecs: list[np.ndarray] = []
    ids: list[int] = []
    sensors: set[str] = set()
    urls = {t["url"]: i for i, t in enumerate(index.tables)}
    for url, wid in windows:
        t = open_table(url)
        why = index.identity.mismatch(t.identity)
        if why:
            raise IdentityError(f"{url}: not comparable with the index {index.path} ({why})")
        data = t.read(("window_id", "embedding"))
        pos = np.flatnonzero(data.column("window_id").to_numpy() == wid)
        if not len(pos):
            raise QueryError(f"{url}: no window {wid} (the table has {t.rows} windows)")
        from terrafm.search.tables import read_embeddings

        vecs.append(read_embeddings(data.take(pos[:1]), t.identity.dim)[0])
        sensors.update(t.identity.sensors)
        if url in urls:
            hit = np.flatnonzero(
                (index.column("table") == urls[url]) & (index.column("window_id") == wid)
            )
            ids.extend(hit.tolist())
    desc = ", ".join(f"{u}#{w}" for u, w in windows)
    ids_ = np.asarray(ids, np.int64)
    return Query(_mean(np.stack(vecs)), ids_, tuple(sorted(sensors)), desc, len(vecs))


def load_places(path: str | Path, crs: str | None = None) -> tuple[list[shapely.Geometry], str]:
    """Example places from a GeoJSON file (``crs`` default lon/lat) or a GeoTIFF mask (the
    centres of its nonzero, non-nodata pixels, in the raster's CRS)."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".geojson"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise QueryError(f"{path}: cannot read as GeoJSON ({e})") from e
        feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
        geoms = []
        for f in feats or []:
            g = f.get("geometry") if f.get("type") == "Feature" else f
            if g:
                geoms.append(shapely.geometry.shape(g))
        if not geoms:
            raise QueryError(f"{path}: no geometry in the GeoJSON")
        return geoms, crs or "OGC:CRS84"
    try:
        with rasterio.open(path) as src:
            data = src.read(1, masked=True)
            t, rcrs = src.transform, src.crs
    except rasterio.errors.RasterioError as e:
        raise QueryError(f"{path}: cannot open as GeoJSON or raster ({e})") from e
    if rcrs is None and crs is None:
        raise QueryError(f"{path}: the raster has no CRS; give one")
    rows, cols = np.nonzero(np.ma.filled(data, 0) != 0)
    if not len(rows):
        raise QueryError(f"{path}: no nonzero pixel marks a place")
    if len(rows) > MAX_MASK_POINTS:
        keep = np.random.default_rng(0).choice(len(rows), MAX_MASK_POINTS, replace=False)
        rows, cols = rows[keep], cols[keep]
    xs, ys = rasterio.transform.xy(t, rows, cols)
    return [shapely.multipoints(np.column_stack([xs, ys]))], crs or rcrs.to_wkt()


def windows_at(index: SearchIndex, geoms: Sequence[shapely.Geometry], crs: str) -> np.ndarray:
    """Ids of the indexed windows whose footprint intersects any of the geometries (``crs``)."""
    src = CRS.from_user_input(crs)
    tab = index.column("table")
    found = []
    for i, t in enumerate(index.tables):
        if t["crs"] is None:
            continue
        dst = CRS.from_wkt(t["crs"])
        local = [
            g
            if src == dst
            else shapely.geometry.shape(transform_geom(src, dst, g.__geo_interface__))
            for g in geoms
        ]
        ids = np.flatnonzero(tab == i)
        fp = shapely.from_wkb(index.rows.column("geometry").take(ids).to_numpy(False))
        tree = shapely.STRtree(fp)
        for g in local:
            found.append(ids[tree.query(g, predicate="intersects")])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def places_query(
    index: SearchIndex, geoms: Sequence[shapely.Geometry], crs: str, description: str
) -> Query:
    """Positives given as places: the indexed windows they touch."""
    ids = windows_at(index, geoms, crs)
    if not len(ids):
        raise QueryError(f"{description}: no indexed window intersects the query place(s)")
    sensors = {s for i in np.unique(index.column("table")[ids]) for s in index.tables[i]["sensors"]}
    return Query(_mean(index.vectors(ids)), ids, tuple(sorted(sensors)), description, len(ids))


def hits_table(index: SearchIndex, ids: np.ndarray, scores: np.ndarray) -> pa.Table:
    """The hits, best first, with lon/lat footprints."""
    rows = index.rows.take(pa.array(ids, pa.int64()))
    tab = rows.column("table").to_numpy()
    tables = index.tables
    return pa.table(
        {
            "rank": pa.array(np.arange(1, len(ids) + 1, dtype=np.int32)),
            "score": pa.array(np.asarray(scores, np.float32)),
            "table": [tables[i]["url"] for i in tab],
            "scene": [";".join(tables[i]["scene"]) for i in tab],
            **{c: rows.column(c) for c in ("window_id", "row", "col", "height", "width")},
            "scene_crs": [_crs_name(tables[i]["crs"]) for i in tab],
            "geometry": rows.column("geometry_lonlat"),
        }
    )


def _crs_name(wkt: str | None) -> str:
    if wkt is None:
        return ""
    crs = CRS.from_wkt(wkt)
    return crs.to_string() if crs.to_epsg() else wkt


def write_hits(table: pa.Table, out: str | Path, extra: dict[str, object]) -> Path:
    """Write hits as GeoParquet (lon/lat polygons, OGC:CRS84) with the query in ``terrafm``."""
    geo = geo_metadata(None, None)
    col = geo["columns"]["geometry"]  # type: ignore[index]
    col["crs"] = LONLAT.to_dict(projjson=True)
    if len(table):
        col["bbox"] = [
            float(v)
            for v in shapely.total_bounds(
                shapely.from_wkb(table.column("geometry").to_numpy(False))
            )
        ]
    meta = {b"geo": json.dumps(geo).encode(), b"terrafm": json.dumps(extra).encode()}
    table = table.replace_schema_metadata(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        pq.write_table(table, tmp)
    return out


def score_maps(
    index: SearchIndex, query: np.ndarray, tables: Sequence[int], out_dir: str | Path
) -> list[Path]:
    """A PNG per indexed table: the query's cosine score of every window over the scene.

    One pixel per 16 x 16 input pixels; each window is painted over its footprint (later windows
    on top where windows overlap); viridis from the lowest to the highest score over all the maps
    drawn; pixels no window covers are transparent. Exact scores, read from the tables.
    """
    from matplotlib import colormaps
    from PIL import Image

    q = normalize(np.asarray(query, np.float32))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grids = []
    for i in tables:
        t = index.table(i)
        data = t.read(("row", "col", "height", "width"))
        s = normalize(t.embeddings()) @ q
        r, c, h, w = (data.column(k).to_numpy() // 16 for k in ("row", "col", "height", "width"))
        grid = np.full((int((r + h).max()), int((c + w).max())), np.nan, np.float32)
        for j in range(len(s)):
            grid[r[j] : r[j] + h[j], c[j] : c[j] + w[j]] = s[j]
        grids.append(grid)
    lo = min(float(np.nanmin(g)) for g in grids)
    hi = max(float(np.nanmax(g)) for g in grids)
    paths = []
    for i, grid in zip(tables, grids):
        rgba = colormaps["viridis"]((grid - lo) / max(hi - lo, 1e-12))
        rgba[np.isnan(grid)] = 0
        img = Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA")
        scale = max(1, 256 // max(grid.shape))  # tiny scenes: enlarge, one block per pixel
        if scale > 1:
            img = img.resize(
                (grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST
            )
        stem = Path(str(index.tables[i]["url"]).rstrip("/")).name.removesuffix(".parquet")
        path = out_dir / f"{i:03d}_{stem}_scores.png"
        img.save(path)
        paths.append(path)
    return paths
