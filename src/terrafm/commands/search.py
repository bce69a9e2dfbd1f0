"""``terrafm search``: index embed tables, then find the windows most like example windows or places.

``terrafm search build --index DIR TABLE ...`` and ``terrafm search query --index DIR ...``.
See docs/search.md.
"""

from __future__ import annotations

import argparse
import sys


def _floats(text: str, n: int, flag: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise SystemExit(f"error: {flag} {text!r}: expected {n} comma-separated numbers")
    return vals


def _window(text: str) -> tuple[str, int]:
    url, sep, wid = text.rpartition("#")
    if not sep or not url or not wid.lstrip("-").isdigit():
        raise SystemExit(f"error: --window {text!r}: expected TABLE#WINDOW_ID")
    return url, int(wid)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build an index from embed tables (paths or fsspec URLs)")
    b.add_argument(
        "tables",
        nargs="+",
        help="GeoParquet tables written by terrafm embed --table (paths, fsspec URLs, globs)",
    )
    b.add_argument("--index", required=True, help="index folder to write")
    b.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "flat", "ivf-flat", "ivf-sq8", "ivf-pq"),
        help="flat = exact; ivf-* = approximate (auto: flat up to 200k vectors, else ivf-sq8)",
    )
    b.add_argument("--nlist", type=int, help="inverted-file cells (default about sqrt(N))")
    b.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="pick the smallest nprobe reaching this recall@10 against exact search",
    )
    b.add_argument(
        "--mixed-sensors",
        action="store_true",
        help="allow tables embedded from different sensors in one index",
    )

    q = sub.add_parser("query", help="find the windows most similar to example windows or places")
    q.add_argument("--index", required=True, help="index folder")
    what = q.add_argument_group("positives (any mix; their embeddings are averaged)")
    what.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="TABLE#ID",
        help="a window of an embed table (indexed or not, same model; another sensor is fine)",
    )
    what.add_argument(
        "--point", action="append", default=[], metavar="X,Y", help="a place, in --crs"
    )
    what.add_argument(
        "--polygon", action="append", default=[], metavar="WKT", help="an area (WKT), in --crs"
    )
    what.add_argument(
        "--places", help="GeoJSON of example places, or a GeoTIFF whose nonzero pixels mark them"
    )
    what.add_argument(
        "--crs",
        help="CRS of --point/--polygon/--places (EPSG:32633, WKT ...; default lon/lat, or the GeoTIFF's)",
    )
    q.add_argument("--k", type=int, default=10, help="hits to return")
    q.add_argument("--min-score", type=float, help="drop hits with a lower cosine similarity")
    q.add_argument(
        "--bbox", metavar="MINX,MINY,MAXX,MAXY", help="only windows intersecting this box"
    )
    q.add_argument("--bbox-crs", help="CRS of --bbox (default lon/lat)")
    q.add_argument(
        "--exclude-positives", action="store_true", help="leave the query's own windows out"
    )
    q.add_argument("--nprobe", type=int, help="cells scanned by an approximate index")
    q.add_argument("--out", required=True, help="GeoParquet of the hits to write")
    q.add_argument("--score-maps", metavar="DIR", help="write a PNG of the scores over each scene")


def _build(args: argparse.Namespace) -> int:
    from terrafm.search import build_index

    r = build_index(
        args.tables,
        args.index,
        kind=args.kind,
        nlist=args.nlist,
        target_recall=args.target_recall,
        mixed_sensors=args.mixed_sensors,
    )
    extra = f", nlist {r.nlist}, nprobe {r.nprobe}" if r.nlist else ""
    print(
        f"{args.index}: {r.count} windows from {r.tables} table(s), {r.kind}{extra}, "
        f"recall@10 {r.recall:.3f} in {r.seconds:.1f}s"
    )
    for note in r.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _bbox_lonlat(args: argparse.Namespace) -> list[float] | None:
    if not args.bbox:
        return None
    box = _floats(args.bbox, 4, "--bbox")
    if args.bbox_crs:
        from rasterio.crs import CRS
        from rasterio.warp import transform_bounds

        box = list(transform_bounds(CRS.from_user_input(args.bbox_crs), "OGC:CRS84", *box))
    return box


def _query(args: argparse.Namespace) -> int:
    import numpy as np
    import shapely

    from terrafm.search import (
        QueryError,
        SearchIndex,
        hits_table,
        load_places,
        places_query,
        score_maps,
        window_query,
        write_hits,
    )
    from terrafm.search.index import normalize

    index = SearchIndex(args.index)
    parts = []
    if args.window:
        parts.append(window_query(index, [_window(w) for w in args.window]))
    geoms = [shapely.Point(*_floats(p, 2, "--point")) for p in args.point]
    try:
        geoms += [shapely.from_wkt(w) for w in args.polygon]
    except shapely.errors.GEOSException as e:
        raise QueryError(f"--polygon: not a WKT geometry ({e})") from e
    if geoms:
        desc = " ".join(args.point + args.polygon)
        parts.append(places_query(index, geoms, args.crs or "OGC:CRS84", desc))
    if args.places:
        pg, crs = load_places(args.places, args.crs)
        parts.append(places_query(index, pg, crs, args.places))
    if not parts:
        raise SystemExit("error: give at least one --window, --point, --polygon or --places")
    weights = np.array([p.count for p in parts], np.float32)  # each embedding counts once
    vector = normalize((np.stack([p.vector for p in parts]) * weights[:, None]).sum(0))
    positives = np.unique(np.concatenate([p.positives for p in parts]))
    sensors = sorted({s for p in parts for s in p.sensors})
    allowed = None
    box = _bbox_lonlat(args)
    if box is not None:
        allowed = index.in_bbox(box)
    if args.exclude_positives:
        keep = np.arange(len(index)) if allowed is None else allowed
        allowed = np.setdiff1d(keep, positives)
    ids, scores = index.search(vector, args.k, allowed=allowed, nprobe=args.nprobe)
    if index.meta["kind"] != "flat":  # report exact cosines, not the codes' estimates
        ids, scores = index.rescore(vector, ids)
    if args.min_score is not None:
        keep = scores >= args.min_score
        ids, scores = ids[keep], scores[keep]
    index_sensors = sorted({s for t in index.tables for s in t["sensors"]})
    extra = {
        "index": str(index.path),
        "query": [p.description for p in parts],
        "query_sensors": sensors,
        "index_sensors": index_sensors,
        "positives": int(len(positives)),
        "k": args.k,
        "min_score": args.min_score,
        "bbox_lonlat": box,
        "kind": index.meta["kind"],
        "recall_at_10": index.meta["recall_at_10"],
    }
    write_hits(hits_table(index, ids, scores), args.out, extra)
    cross = (
        f" (cross-sensor: {sensors} against {index_sensors})" if sensors != index_sensors else ""
    )
    print(f"{args.out}: {len(ids)} hit(s) from {len(positives)} indexed positive(s){cross}")
    if len(ids):
        print(f"best {scores[0]:.4f}, last {scores[-1]:.4f}")
    if args.score_maps:
        tables = sorted({int(t) for t in index.column("table")[ids]}) if len(ids) else []
        for path in score_maps(index, vector, tables, args.score_maps):
            print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it loads
    from rasterio.errors import CRSError

    from terrafm.search import IdentityError, QueryError, TableError

    try:
        return _build(args) if args.action == "build" else _query(args)
    except (TableError, IdentityError, QueryError, CRSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
