"""A cosine-similarity index over the window embeddings of ``terrafm embed`` tables (faiss).

The index is a folder:

- ``index.faiss``: the faiss index over unit-normalised embeddings (inner product = cosine);
- ``rows.parquet``: one row per vector: the source table, the row position in it, the window
  (``window_id``, ``row``, ``col``, ``height``, ``width``), the footprint in the scene CRS and in
  lon/lat, and the lon/lat bounds used by bounding-box filters;
- ``meta.json``: the embeddings' identity (model, weights digest, layer, width), the sensors and
  scene of every table, the index kind, ``nprobe`` and the recall measured at build time.

Kinds (see docs/search.md for the measured trade-offs): ``flat`` is exact (a scan of every
vector); ``ivf-flat``, ``ivf-sq8`` and ``ivf-pq`` are inverted files over ``nlist`` k-means cells
that scan the ``nprobe`` nearest cells, storing vectors in full, as 8-bit codes or as 4-bit product-
quantised codes. ``auto`` picks ``flat`` up to :data:`EXACT_LIMIT` vectors and ``ivf-sq8`` above.
For an approximate kind the build measures recall@10 against exact search on sampled indexed
windows and picks the smallest ``nprobe`` that reaches the target recall.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from terrafm.errors import ConfigError
from terrafm.outputs import atomic_write
from terrafm.search.tables import (
    EmbedTable,
    Identity,
    IdentityError,
    TableError,
    expand,
    open_table,
)

__all__ = ["EXACT_LIMIT", "KINDS", "BuildReport", "SearchIndex", "build_index", "normalize"]

log = logging.getLogger(__name__)

FORMAT = "terrafm-search-index/1"
KINDS = ("auto", "flat", "ivf-flat", "ivf-sq8", "ivf-pq")
# Up to this many vectors an exact scan answers a query in well under 100 ms on two CPU cores
# (docs/search.md); above it ``auto`` builds an inverted file.
EXACT_LIMIT = 200_000
LONLAT = CRS.from_user_input("OGC:CRS84")
EVAL_K = 10
PLATEAU = 0.005  # recall@10 gained by doubling nprobe below which tuning stops


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def default_nlist(n: int) -> int:
    """Inverted-file cells: about sqrt(n) (a power of two), at least 16 and at most n / 39."""
    nlist = 2 ** round(math.log2(max(math.sqrt(n), 16)))
    return int(max(1, min(nlist, n // 39)))  # faiss wants >= 39 training points per cell


def train_size(nlist: int) -> int:
    """Training vectors for an inverted file: k-means wants >= 39 points per cell (64 given), and
    the 8-bit ranges and product-quantiser codebooks at least 10k."""
    return max(64 * nlist, 10_000)


def make_index(kind: str, dim: int, nlist: int) -> faiss.Index:
    """An untrained faiss index of ``kind`` over unit vectors (inner product = cosine)."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    storage = {"ivf-flat": "Flat", "ivf-sq8": "SQ8", "ivf-pq": f"PQ{_pq_m(dim)}x4fs"}[kind]
    return faiss.index_factory(dim, f"IVF{nlist},{storage}", faiss.METRIC_INNER_PRODUCT)


def _pq_m(dim: int) -> int:
    """Sub-quantisers of 4-bit product quantisation: 4 dimensions each, so one bit per dimension
    (96 bytes for 768), an even divisor of ``dim`` (fast-scan packs two codes per byte).

    4-bit codes with twice the sub-quantisers of 8-bit PQ at the same bytes train much faster (16
    centroids per sub-space instead of 256) and are scanned with SIMD lookups (faiss "fast-scan").
    """
    m = max(2, dim // 4)
    while dim % m or m % 2:
        m -= 1
    return m


@dataclass
class BuildReport:
    count: int
    kind: str
    nlist: int | None
    nprobe: int | None
    recall: float | None
    seconds: float
    tables: int = 0
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ row table
def _lonlat(geoms: np.ndarray, crs_wkt: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Footprints in lon/lat (corner-wise) and their bounds (n, 4); NaN when the CRS is unknown."""
    if crs_wkt is None or len(geoms) == 0:
        return np.array([None] * len(geoms), dtype=object), np.full((len(geoms), 4), np.nan)
    coords = shapely.get_coordinates(geoms)
    xs, ys = warp_transform(CRS.from_wkt(crs_wkt), LONLAT, coords[:, 0], coords[:, 1])
    ll = shapely.set_coordinates(geoms.copy(), np.column_stack([xs, ys]))
    return ll, shapely.bounds(ll)


def _rows(table_index: int, t: EmbedTable, data: pa.Table) -> pa.Table:
    geoms = shapely.from_wkb(data.column("geometry").to_numpy(zero_copy_only=False))
    ll, b = _lonlat(geoms, t.crs_wkt)
    n = len(data)
    return pa.table(
        {
            "table": pa.array(np.full(n, table_index, np.int32)),
            "pos": pa.array(np.arange(n, dtype=np.int32)),
            **{c: data.column(c) for c in ("window_id", "row", "col", "height", "width")},
            "minlon": b[:, 0],
            "minlat": b[:, 1],
            "maxlon": b[:, 2],
            "maxlat": b[:, 3],
            "geometry": data.column("geometry"),
            "geometry_lonlat": pa.array(
                [None if g is None else shapely.to_wkb(g) for g in ll], pa.binary()
            ),
        }
    )


# ------------------------------------------------------------------------------------ building
def _check_identities(tables: Sequence[EmbedTable], mixed_sensors: bool) -> Identity:
    first = tables[0].identity
    for t in tables[1:]:
        why = first.mismatch(t.identity)
        if why:
            raise IdentityError(
                f"{t.url}: embeddings not comparable with {tables[0].url} ({why}); "
                "index tables of one model, weights and layer"
            )
        if t.identity.sensors != first.sensors and not mixed_sensors:
            raise IdentityError(
                f"{t.url}: sensors {list(t.identity.sensors)} differ from {tables[0].url} "
                f"{list(first.sensors)}; pass --mixed-sensors (mixed_sensors=True) to index them together"
            )
    return first


class _ExactTopK:
    """Running exact top-k of a few query vectors over vectors seen in chunks."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = queries
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.zeros((len(queries), 0), np.int64)

    def add(self, x: np.ndarray, first_id: int) -> None:
        s = np.concatenate([self.scores, self.q @ x.T], axis=1)
        ids = np.concatenate(
            [
                self.ids,
                np.broadcast_to(np.arange(first_id, first_id + len(x)), (len(self.q), len(x))),
            ],
            axis=1,
        )
        k = min(self.k, s.shape[1])
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1), 1)
        self.scores = np.take_along_axis(s, top, 1)
        self.ids = np.take_along_axis(ids, top, 1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-k ids found among the approximate top-k ids, over all queries."""
    k = exact_ids.shape[1]
    hit = sum(len(set(a[:k]) & set(e)) for a, e in zip(approx_ids, exact_ids))
    return hit / exact_ids.size


def _sample_rows(tables: Sequence[EmbedTable], size: int, rng: np.random.Generator):
    """A uniform random sample of ``size`` embeddings across all tables (one pass)."""
    total = sum(t.rows for t in tables)
    pick = np.sort(rng.choice(total, size=min(size, total), replace=False))
    out, start = [], 0
    for t in tables:
        sel = pick[(pick >= start) & (pick < start + t.rows)] - start
        if len(sel):
            out.append(normalize(t.embeddings()[sel]))
        start += t.rows
    return np.concatenate(out)


def tune_nprobe(
    index: faiss.Index, queries: np.ndarray, exact_ids: np.ndarray, target: float, nlist: int
) -> tuple[int, float]:
    """The smallest power-of-two ``nprobe`` whose recall@k reaches ``target``.

    When doubling ``nprobe`` no longer helps (recall up by less than :data:`PLATEAU`: the codes,
    not the cells, limit it, as with product quantisation) the previous value is kept.
    """
    nprobe, prev = 1, (0, -1.0)
    while True:
        faiss.extract_index_ivf(index).nprobe = nprobe
        _, ids = index.search(queries, exact_ids.shape[1])
        r = recall_at_k(ids, exact_ids)
        if r >= target or nprobe >= nlist:
            return nprobe, r
        if nprobe >= 8 and r - prev[1] < PLATEAU:
            faiss.extract_index_ivf(index).nprobe = prev[0]
            return prev
        prev = (nprobe, r)
        nprobe = min(nprobe * 2, nlist)


def build_index(
    tables: Sequence[str | Path],
    out: str | Path,
    *,
    kind: str = "auto",
    nlist: int | None = None,
    target_recall: float = 0.95,
    mixed_sensors: bool = False,
    eval_queries: int = 200,
    seed: int = 0,
) -> BuildReport:
    """Build an index folder from embed tables (paths or fsspec URLs, glob patterns allowed).

    Raises:
        TableError: a file that is not an embed table. IdentityError: tables of different models,
        weights, layers or widths (or sensors, unless ``mixed_sensors``).
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    if not tables:
        raise ConfigError("no tables to index")
    t0 = time.monotonic()
    opened = [open_table(u) for u in expand(tables)]
    identity = _check_identities(opened, mixed_sensors)
    n = sum(t.rows for t in opened)
    if n == 0:
        raise TableError(f"{', '.join(map(str, tables))}: no windows to index")
    if kind == "auto":
        kind = "flat" if n <= EXACT_LIMIT else "ivf-sq8"
    dim = identity.dim
    rng = np.random.default_rng(seed)
    approx = kind != "flat"
    report = BuildReport(n, kind, None, None, None, 0.0, len(opened))
    if approx:
        report.nlist = nlist or default_nlist(n)
        if n < 39 * report.nlist:
            raise ConfigError(f"{n} vectors are too few for {report.nlist} cells: use kind='flat'")
    index = make_index(kind, dim, report.nlist or 0)
    exact = None
    if approx:  # a first pass over the tables for a uniform training sample
        train = _sample_rows(opened, max(train_size(report.nlist or 1), eval_queries), rng)
        index.train(train)
        queries = train[rng.choice(len(train), size=min(eval_queries, len(train)), replace=False)]
        exact = _ExactTopK(queries, min(EVAL_K, n))
        del train
    rows, scenes, start = [], [], 0
    for i, t in enumerate(opened):
        data = t.read((*_ROW_COLUMNS, "embedding"))
        x = normalize(_embeddings(data, dim, t.url))
        index.add(x)
        if exact is not None:
            exact.add(x, start)
        rows.append(_rows(i, t, data))
        scenes.append(_scene(data))
        start += len(x)
    if exact is not None:
        report.nprobe, report.recall = tune_nprobe(
            index, exact.q, exact.ids, target_recall, report.nlist or 1
        )
        if report.recall < target_recall:
            report.notes.append(
                f"recall@{EVAL_K} {report.recall:.3f} < target {target_recall} at nprobe "
                f"{report.nprobe}: scanning more cells no longer helps (the codes limit it)"
            )
    else:
        report.recall = 1.0
    _write(out, index, pa.concat_tables(rows), identity, opened, scenes, report)
    report.seconds = time.monotonic() - t0
    return report


_ROW_COLUMNS = ("window_id", "row", "col", "height", "width", "sources", "geometry")


def _embeddings(data: pa.Table, dim: int, name: str) -> np.ndarray:
    from terrafm.search.tables import read_embeddings

    x = read_embeddings(data, dim)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise TableError(f"{name}: {int(bad.sum())} window embedding(s) hold NaN or inf")
    return x


def _scene(data: pa.Table) -> list[str]:
    """A table's source files (the same on every row)."""
    return [str(s) for s in data.column("sources")[0].as_py()] if len(data) else []


def _write(
    out: str | Path,
    index: faiss.Index,
    rows: pa.Table,
    identity: Identity,
    tables: Sequence[EmbedTable],
    scenes: Sequence[list[str]],
    report: BuildReport,
) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "identity": identity.to_json(),
        "kind": report.kind,
        "count": report.count,
        "nlist": report.nlist,
        "nprobe": report.nprobe,
        "recall_at_10": report.recall,
        "tables": [
            {
                "url": t.url,
                "rows": t.rows,
                "crs": t.crs_wkt,
                "sensors": list(t.identity.sensors),
                "checkpoint": t.checkpoint,
                "scene": s,
            }
            for t, s in zip(tables, scenes)
        ],
    }
    with atomic_write(out / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_write(out / "rows.parquet") as tmp:
        pq.write_table(rows, tmp)
    with atomic_write(out / "meta.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))


# ------------------------------------------------------------------------------------ searching
class SearchIndex:
    """An index folder opened for queries.

    Attributes:
        meta: the ``meta.json`` content.
        identity: the embeddings' identity.
        rows: the per-vector row table (``rows.parquet``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise TableError(f"{self.path}: not a terrafm search index (no meta.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise TableError(f"{self.path}: unknown index format {self.meta.get('format')!r}")
        self.identity = Identity.from_json(self.meta["identity"])
        self.index = faiss.read_index(str(self.path / "index.faiss"))
        self.rows = pq.read_table(self.path / "rows.parquet")
        self._tables: dict[int, EmbedTable] = {}

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def tables(self) -> list[dict[str, Any]]:
        return list(self.meta["tables"])

    def table(self, i: int) -> EmbedTable:
        if i not in self._tables:
            t = open_table(self.meta["tables"][i]["url"])
            why = self.identity.mismatch(t.identity)
            if why or t.rows != self.meta["tables"][i]["rows"]:
                raise IdentityError(f"{t.url}: changed since it was indexed ({why or 'rows'})")
            self._tables[i] = t
        return self._tables[i]

    def column(self, name: str) -> np.ndarray:
        return self.rows.column(name).to_numpy(zero_copy_only=False)

    def in_bbox(self, bbox: Sequence[float]) -> np.ndarray:
        """Ids of the windows whose lon/lat footprint overlaps ``(minlon, minlat, maxlon, maxlat)``."""
        x0, y0, x1, y1 = bbox
        cand = np.flatnonzero(
            (self.column("minlon") <= x1)
            & (self.column("maxlon") >= x0)
            & (self.column("minlat") <= y1)
            & (self.column("maxlat") >= y0)
        )
        geoms = shapely.from_wkb(self.rows.column("geometry_lonlat").take(cand).to_numpy(False))
        box = shapely.box(x0, y0, x1, y1)
        # sharing an edge with the box is not being in it
        return cand[shapely.intersects(geoms, box) & ~shapely.touches(geoms, box)]

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Unit-normalised embeddings of indexed windows, read exactly from their source tables."""
        idx = np.asarray(ids, np.int64)
        tab, pos = self.column("table")[idx], self.column("pos")[idx]
        out = np.zeros((len(idx), self.identity.dim), np.float32)
        for t in np.unique(tab):
            sel = tab == t
            out[sel] = self.table(int(t)).embeddings()[pos[sel]]
        return normalize(out)

    def rescore(self, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hits re-scored with exact cosines (read from their tables) and re-ranked.

        An approximate index ranks by quantised codes; this makes the reported scores exact."""
        if not len(ids):
            return ids, np.zeros(0, np.float32)
        exact = self.vectors(ids) @ normalize(np.asarray(query, np.float32))
        order = np.argsort(-exact, kind="stable")
        return np.asarray(ids)[order], exact[order].astype(np.float32)

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        min_score: float | None = None,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest windows to one query vector by cosine similarity.

        Args:
            query: (D,) embedding (normalised here).
            k: hits wanted.
            min_score: drop hits with a lower cosine similarity.
            allowed: restrict to these ids (e.g. :meth:`in_bbox`).
            nprobe: cells scanned by an inverted file (default: the tuned value).

        Returns:
            ids and scores, best first.
        """
        q = normalize(np.asarray(query, np.float32).reshape(1, -1))
        if q.shape[1] != self.identity.dim:
            raise ConfigError(f"query has {q.shape[1]} features, the index {self.identity.dim}")
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        sel = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        if self.meta["kind"] == "flat":
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = int(nprobe or self.meta["nprobe"] or 1)
        if sel is not None:
            params.sel = sel  # ``sel`` stays referenced here until the search returns
        scores, ids = self.index.search(q, k, params=params)
        keep = ids[0] >= 0
        if min_score is not None:
            keep &= scores[0] >= min_score
        return ids[0][keep], scores[0][keep]
