"""Pre-decoded training shards: ``terrafm prepare`` writes them once, the loader reads crop windows.

A shard store is one Zarr v3 group (format and choices: ``docs/data.md``, "Training shards")::

    <out>/zarr.json                 group; attributes: format, version, sensors, tile size,
                                    encodings, layout (the arrays of each sensor), sources
    <out>/<sensor>_<gsd>m/          uint16 (N, C_g, T/f + 2h, T/f + 2h): tile n, the bands of one
                                    native resolution (S2: 10 m f=1, 20 m f=2, 60 m f=6; halo h=1
                                    for the coarse ones), stem order
    <out>/<sensor>/                 uint16 (N, C, T, T): all bands on the 10 m grid (S1; sources
                                    read only on the 10 m grid; ``native=False``; version 1)
    <out>/valid/                    bool (N, n_sensors, T, T): pixel usable (not no-data/cloud/NaN)
    <out>/cells.parquet             one row per cell: name, sensors, land cover, provenance
    <out>/tiles.parquet             one row per tile: size, read errors, valid/finite pixel counts
    <out>/progress/shard_*.parquet  the tiles rows of each finished shard (resume of prepare)

Arrays are chunked one tile x all bands x ``chunk`` px (a crop window decodes only the chunks it
touches) and grouped by Zarr's sharding codec, ``tiles_per_shard`` tiles per file, each chunk
compressed with Blosc (Zstd or LZ4HC, byte shuffle). Values are stored as ``stored = round((value -
offset) / scale)``: S2 DN with offset -1000 DN and scale 1 (exact: at native resolution every band
keeps its integers; on the 10 m grid ±0.5 DN for the resampled 20 m / 60 m bands), S1 dB with
offset -128 dB and scale 1/256 dB (error <= 1/512 dB, range [-128, 128) dB). Invalid 10 m pixels
store 0.

Reading reproduces :class:`terrafm.data.dataset.MultiCropDataset`: the same curated tile table,
sampler keys, skip rules (read errors recorded at prepare time, the ``max_invalid`` rule applied to
the stored pixel counts), substitutes and view plans; only each sample's read window is decoded
(per array, the window scaled to its grid, :func:`group_span`) and the views are cut batched by
:class:`terrafm.data.batch_multicrop.BatchMultiCrop`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from terrafm.data.batch_multicrop import (
    BatchMultiCrop,
    Encoding,
    Group,
    GroupWindow,
    resolve_device,
)
from terrafm.data.curation import TileTable, curate
from terrafm.data.dataset import KeyedDataset
from terrafm.data.landcover import LandCover
from terrafm.data.multicrop import MultiCropConfig, ViewPlan, plan_views
from terrafm.data.sampling import SampleKey
from terrafm.data.skips import SampleError
from terrafm.data.tiles import CellInfo, SensorTile, TileSource
from terrafm.errors import DataError
from terrafm.outputs import atomic_write
from terrafm.sensors import get_sensor

__all__ = [
    "ENCODINGS",
    "PrepareReport",
    "ShardError",
    "ShardStore",
    "ShardTiles",
    "ShardViewDataset",
    "build_shard_loader",
    "collate_raw",
    "decode",
    "encode",
    "group_span",
    "prepare_shards",
]


class ShardError(DataError, ValueError):
    """A shard store that cannot be written or read (missing, incomplete, other settings)."""


log = logging.getLogger("terrafm.data")

FORMAT = "terrafm-shards"
VERSION = 2  # 2: one array per native resolution ("layout"); 1: all bands on the 10 m grid
ENCODINGS: dict[str, Encoding] = {
    "s1": Encoding(scale=1 / 256, offset=-128.0),
    "s2_l1c": Encoding(scale=1.0, offset=-1000.0),
    "s2_l2a": Encoding(scale=1.0, offset=-1000.0),
}
_MAX_STORED = 65535
CODECS = {"zstd": 3, "lz4hc": 5}  # Blosc compressor -> level


def encode(sensor: str, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Model-unit (C, h, w) float values -> uint16 (``ENCODINGS``); invalid pixels 0.

    Returns:
        (stored values, number of valid values clipped to the storable range).
    """
    enc = ENCODINGS[sensor]
    q = np.rint((np.where(valid[None], data, enc.offset) - enc.offset) / enc.scale)
    clipped = int(((q < 0) | (q > _MAX_STORED)).sum())
    return np.clip(q, 0, _MAX_STORED).astype(np.uint16), clipped


def decode(sensor: str, stored: np.ndarray) -> np.ndarray:
    """uint16 -> float32 model units (S2 DN with any baseline offset removed, S1 dB)."""
    enc = ENCODINGS[sensor]
    return (stored.astype(np.float32) * np.float32(enc.scale) + np.float32(enc.offset)).astype(
        np.float32
    )


def _chunk_side(tile: int) -> int:
    """Chunk side: the tile cut into pieces of at most 192 px (534 -> 178, 96 -> 96)."""
    pieces = -(-tile // 192)
    return -(-tile // pieces)


def _layout(sensors: Sequence[str], size: int, native: bool) -> dict[str, list[Group]]:
    """The arrays of each sensor: one per native resolution (``native``; S2: 10, 20 and 60 m,
    the coarse ones with a one-pixel halo), or all bands on the 10 m grid in one array (sources
    that only read the 10 m grid, or tiles that are not whole 60 m pixels)."""
    out: dict[str, list[Group]] = {}
    for s in sensors:
        bands = get_sensor(s).bands
        factors = sorted({max(1, round(b.gsd / 10)) for b in bands})
        if not native or len(factors) == 1 or any(size % f for f in factors):
            out[s] = [Group(s, 1, 0, tuple(range(len(bands))))]
            continue
        out[s] = [
            Group(
                f"{s}_{10 * f}m",
                f,
                0 if f == 1 else 1,
                tuple(k for k, b in enumerate(bands) if max(1, round(b.gsd / 10)) == f),
            )
            for f in factors
        ]
    return out


def _group_side(size: int, g: Group) -> int:
    """Stored side of a ``size`` px tile in group ``g``'s array."""
    return size // g.factor + 2 * g.halo


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What ``prepare`` did.

    Attributes:
        tiles: tiles in the store.
        shards: shards in the store.
        written: shards written by this call (the rest were already done).
        skipped: per reason, tiles whose sensor read failed (they are kept with the error, and the
            loader skips them exactly like the parquet path).
        messages: the first skip messages, naming file, row group, cell, tile and band.
        clipped: valid values outside the storable range (clipped).
        seconds: wall time of this call.
    """

    tiles: int = 0
    shards: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    clipped: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        lines = [
            f"prepared {self.tiles} tiles in {self.shards} shards ({self.written} written now, "
            f"{self.shards - self.written} already done) in {self.seconds:.1f} s",
            f"tiles with unreadable sensors: {sum(self.skipped.values())}"
            + (f" ({parts})" if parts else ""),
        ]
        lines += [f"  {m}" for m in self.messages[:20]]
        if self.clipped:
            lines.append(f"values clipped to the storable range: {self.clipped}")
        return "\n".join(lines)


def _cells_table(sources: Sequence[TileSource], cells: Sequence[Sequence[CellInfo]]) -> pa.Table:
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "source",
            "cell",
            "name",
            "sensors",
            "n_tiles",
            "tile_classes",
            "landcover",
            "worldcover_dominant",
            "worldcover_hist",
            "climate_zone",
            "region",
            "provenance",
        )
    }
    for si, (src, cs) in enumerate(zip(sources, cells)):
        for ci, c in enumerate(cs):
            lc = c.landcover
            rows["source"].append(si)
            rows["cell"].append(ci)
            rows["name"].append(c.name)
            rows["sensors"].append(list(c.sensors))
            rows["n_tiles"].append(c.n_tiles)
            rows["tile_classes"].append(list(c.tile_classes) if c.tile_classes else None)
            rows["landcover"].append(lc is not None)
            rows["worldcover_dominant"].append(lc.dominant if lc else 0)
            rows["worldcover_hist"].append(list(lc.hist) if lc else None)
            rows["climate_zone"].append(lc.climate_zone if lc else None)
            rows["region"].append(lc.region if lc else None)
            rows["provenance"].append(json.dumps(_provenance(src, ci)))
    return pa.table(rows)


def _provenance(src: TileSource, cell: int) -> dict[str, Any]:
    """Where a cell's pixels come from: Major-TOM file and row group per sensor, or raster files."""
    rows = getattr(src, "_rows", None)
    products = getattr(src, "products", None)
    if rows is not None and products is not None:
        out: dict[str, Any] = {}
        for s, i in rows[cell].items():
            file, rg = products[s].locate(i)
            out[s] = {"file": file, "row_group": rg, "metadata_row": i}
        return out
    scenes = getattr(src, "_scenes", None)
    if scenes is not None:
        scene = scenes[cell]
        return {"scene": scene.name, "files": {k: list(v) for k, v in scene.files.items()}}
    return {}


def _cells_from_table(df: pd.DataFrame, n_sources: int) -> list[list[CellInfo]]:
    out: list[list[CellInfo]] = [[] for _ in range(n_sources)]
    for r in df.itertuples(index=False):
        lc = None
        if r.landcover:
            hist = tuple(float(v) for v in r.worldcover_hist)
            lc = LandCover(r.name, int(r.worldcover_dominant), hist, r.climate_zone, r.region)
        classes = tuple(int(v) for v in r.tile_classes) if r.tile_classes is not None else None
        out[int(r.source)].append(CellInfo(r.name, tuple(r.sensors), int(r.n_tiles), lc, classes))
    return out


class _Tiles:
    """The tiles of all cells in store order, as (source, cell, tile), from one array of
    cumulative tile counts (a few bytes per cell, not a tuple per tile)."""

    def __init__(self, cells: Sequence[Sequence[CellInfo]]) -> None:
        self.cell_of = [(si, ci) for si, cs in enumerate(cells) for ci in range(len(cs))]
        counts = [c.n_tiles for cs in cells for c in cs]
        self.ends = np.cumsum(np.asarray(counts, np.int64))

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        k = int(np.searchsorted(self.ends, i, side="right"))
        start = int(self.ends[k - 1]) if k else 0
        si, ci = self.cell_of[k]
        return si, ci, i - start


def _open_group(
    url: str, mode: Literal["r", "r+", "w"], storage_options: dict[str, object] | None = None
) -> Any:
    import zarr

    if "://" in url:
        from zarr.storage import FsspecStore

        store = FsspecStore.from_url(
            url, storage_options=dict(storage_options or {}), read_only=mode == "r"
        )
        return zarr.open_group(store=store, mode=mode)
    return zarr.open_group(url, mode=mode)


def _probe_tile_size(
    sources: Sequence[TileSource], cells: Sequence[Sequence[CellInfo]], sensors: Sequence[str]
) -> int:
    """Side of the first readable tile (Major-TOM cells only reveal their size when read)."""
    tiles = _Tiles(cells)
    for si, ci, t in (tiles[i] for i in range(min(64, len(tiles)))):
        got, _ = sources[si].read_tile(ci, t, [s for s in sensors if s in cells[si][ci].sensors])
        for st in got.values():
            return int(max(st.data.shape[-2:]))
    raise ShardError(
        "no readable tile among the first 64: cannot tell the tile size; pass tile_size"
    )


_WORKER: dict[str, Any] = {}


def _init_worker(
    sources: list[TileSource],
    cells: list[list[CellInfo]],
    out: str,
    sensors: list[str],
    threads: int,
    layout: dict[str, list[Group]],
) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(
        sources=sources,
        cells=cells,
        tiles=_Tiles(cells),
        out=out,
        sensors=sensors,
        layout=layout,
    )


def _prepare_shard(shard: int, tile_size: int, tiles_per_shard: int) -> dict[str, Any]:
    """Read, encode and write one shard (``tiles_per_shard`` consecutive tiles)."""
    w = _WORKER
    sensors: list[str] = w["sensors"]
    all_tiles = w["tiles"]
    lo, hi = shard * tiles_per_shard, min(len(all_tiles), (shard + 1) * tiles_per_shard)
    n, size = hi - lo, tile_size
    layout: dict[str, list[Group]] = w["layout"]
    native = any(g.factor > 1 for gs in layout.values() for g in gs)
    data = {
        g.array: np.zeros((n, len(g.bands), _group_side(size, g), _group_side(size, g)), np.uint16)
        for s in sensors
        for g in layout[s]
    }
    valid = np.zeros((n, len(sensors), size, size), bool)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("index", "source", "cell", "tile", "height", "width", "errors", "order")
    }
    for s in sensors:
        rows[f"n_valid_{s}"], rows[f"n_finite_{s}"] = [], []
    skipped: Counter[str] = Counter()
    messages: list[str] = []
    clipped = 0
    for k, (si, ci, t) in enumerate(all_tiles[i] for i in range(lo, hi)):
        src, cell = w["sources"][si], w["cells"][si][ci]
        wanted = [s for s in sensors if s in cell.sensors]
        got, errors = (
            src.read_tile(ci, t, wanted, native=True) if native else src.read_tile(ci, t, wanted)
        )
        errors = list(errors)
        ok: dict[str, SensorTile] = {}
        for s, st in got.items():
            h, wd = st.data.shape[-2:]
            problem = ""
            if h > size or wd > size or st.valid.shape != (h, wd):
                problem = f"tile {st.data.shape} does not fit the store's {size} px tiles"
            elif len(layout[s]) > 1:
                groups = [(g.factor, g.bands) for g in st.native or ()]
                if groups != [(g.factor, g.bands) for g in layout[s]]:
                    problem = f"native band groups {groups} differ from the store's"
                elif h % 6 or wd % 6:
                    problem = f"tile {h}x{wd} px is not whole 60 m pixels"
            if problem:
                errors.append(
                    SampleError("mismatch", f"{src.name} tile {cell.name}/{t}", f"{s}: {problem}")
                )
            else:
                ok[s] = st
        shapes = {tuple(st.data.shape[-2:]) for st in ok.values()}
        if len(shapes) > 1:
            errors.append(
                SampleError(
                    "mismatch", f"{src.name} tile {cell.name}/{t}", f"sensor grids differ: {shapes}"
                )
            )
        h, wd = shapes.pop() if len(shapes) == 1 else (0, 0)
        for s in sensors:
            nv = nf = -1
            st_ = ok.get(s)
            if st_ is not None and len(shapes) == 0:
                finite = np.isfinite(st_.data).all(axis=0)
                v = st_.valid & finite
                if len(layout[s]) == 1:  # all bands on the 10 m grid
                    stored, c = encode(s, st_.data, v)
                    clipped += c
                    data[layout[s][0].array][k, :, :h, :wd] = stored
                else:
                    for g, ng in zip(layout[s], st_.native or ()):
                        # 10 m bands: invalid pixels store 0; coarse bands: all finite pixels
                        gv = v if g.factor == 1 else np.isfinite(ng.data).all(axis=0)
                        stored, c = encode(s, ng.data, gv)
                        clipped += c
                        hn, wn = stored.shape[-2:]
                        data[g.array][k, :, :hn, :wn] = stored
                valid[k, sensors.index(s), :h, :wd] = v
                nv, nf = int(v.sum()), int(finite.sum())
            rows[f"n_valid_{s}"].append(nv)
            rows[f"n_finite_{s}"].append(nf)
        for e in errors:
            skipped[e.reason] += 1
            if len(messages) < 20:
                messages.append(str(e))
            log.warning("prepare: unreadable %s", e)
        rows["index"].append(lo + k)
        rows["source"].append(si)
        rows["cell"].append(ci)
        rows["tile"].append(t)
        rows["height"].append(h)
        rows["width"].append(wd)
        rows["errors"].append(
            json.dumps([[e.reason, e.where, e.detail, _error_sensor(e, sensors)] for e in errors])
        )
        rows["order"].append(json.dumps([s for s in got if s in ok]))
    group = _open_group(w["out"], "r+")
    for name, arr in data.items():
        group[name][lo:hi] = arr
    group["valid"][lo:hi] = valid
    with atomic_write(Path(w["out"]) / "progress" / f"shard_{shard:06d}.parquet") as tmp:
        pq.write_table(pa.table(rows), tmp)
    return {"skipped": dict(skipped), "messages": messages, "clipped": clipped}


def prepare_shards(
    roots: Sequence[str | Path | TileSource],
    out: str | Path,
    sensors: Sequence[str],
    *,
    curation: Any = None,
    quality: Any = None,
    workers: int = 0,
    tiles_per_shard: int = 16,
    tile_size: int | None = None,
    chunk: int | None = None,
    storage_options: dict[str, object] | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_shards: int | None = None,
    codec: str = "zstd",
    native: bool = True,
) -> PrepareReport:
    """Convert pretraining sources into a shard store at ``out`` (module docstring); resumable.

    Every paired cell is stored with all its tiles (ocean thinning and the ``max_invalid`` rule are
    applied when reading, so one store serves any curation seed). A sensor tile the reader cannot
    read is kept as an error record (reason and message, counted in the report) and skipped by the
    loader like the parquet path skips it. Each shard is read, encoded and written by one worker
    process, then recorded under ``progress/``: a rerun after an interruption writes only the
    shards not recorded. Memory: one shard of decoded tiles per worker.

    Args:
        roots: Major-TOM roots, GeoTIFF folders or built sources (as for the loader).
        out: the store folder (local path; created).
        sensors: sensors to store.
        curation: :class:`terrafm.data.loader.CurationConfig` (pairing, metadata filters, tiling).
        quality: :class:`terrafm.data.loader.QualityConfig` (cloud masking, harmonisation).
        workers: worker processes (0: in this process).
        tiles_per_shard: tiles per shard file (and per unit of work).
        tile_size: tile side of the store; default: the first readable tile's.
        chunk: chunk side in px (default: the tile cut into pieces of at most 192 px).
        storage_options: fsspec options of remote roots.
        progress: called with (shards done, shards in total) after each shard.
        max_shards: stop after writing this many shards (to test resumption).
        codec: Blosc compressor of the chunks, ``zstd`` (level 3) or ``lz4hc`` (level 5: ~1.25x
            the bytes, ~3.5x faster to decode; docs/data.md, "Chunks and shards").
        native: keep each band at its native resolution, one array per resolution, when every
            source can read them (Major-TOM) and the tiles are whole 60 m pixels; otherwise (or
            with False) all bands are stored on the 10 m grid (docs/data.md, "Native
            resolution").

    Raises:
        ValueError: ``out`` holds a store prepared from other sources or settings, or other files.
    """
    from terrafm.data.loader import CurationConfig, QualityConfig, open_sources

    t0 = time.perf_counter()
    if codec not in CODECS:
        raise ShardError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    cur, qual = curation or CurationConfig(), quality or QualityConfig()
    sensors = list(sensors)
    sources = open_sources(roots, sensors, cur, qual, storage_options)
    cells = [list(s.cells()) for s in sources]
    tiles = _Tiles(cells)
    if not len(tiles):
        raise ShardError("no cells to prepare: the sources are empty or no cell has every sensor")
    out = Path(out)
    settings = {
        "sources": [s.name for s in sources],
        "sensors": sensors,
        "n_tiles": len(tiles),
        "tiles_per_shard": tiles_per_shard,
        "curation": {
            k: getattr(cur, k)
            for k in (
                "require_all",
                "max_cloud_cover",
                "max_nodata",
                "tiles_per_side",
                "tile_size",
                "s1_unit",
            )
        },
        "quality": {k: getattr(qual, k) for k in ("mask_clouds", "harmonize")},
        "native": bool(native and all(getattr(src, "native_reads", False) for src in sources)),
    }
    done_marker = out / "zarr.json"
    if done_marker.exists():
        attrs = dict(_open_group(str(out), "r").attrs)
        if attrs.get("format") != FORMAT or attrs.get("settings") != json.loads(
            json.dumps(settings)
        ):
            raise ShardError(
                f"{out} already holds a shard store prepared from other sources or settings "
                f"({attrs.get('settings')}); choose another output folder"
            )
        if attrs.get("codec", "zstd") != codec:
            raise ShardError(
                f"{out} is being prepared with codec {attrs.get('codec', 'zstd')!r}, not "
                f"{codec!r}: rerun with that codec, or choose another output folder"
            )
        size = int(attrs["tile_size"])
        layout = _read_layout(attrs)
    else:
        if out.exists() and any(out.iterdir()):  # never write a store over other files
            raise ShardError(f"{out} exists and is not a shard store: choose an empty folder")
        # Folder scenes smaller than a tile give smaller tiles: the configured size bounds them.
        folders = any(hasattr(src, "_scenes") for src in sources)
        size = tile_size or max(
            _probe_tile_size(sources, cells, sensors), cur.tile_size if folders else 0
        )
        layout = _layout(sensors, size, bool(settings["native"]))
        _create_store(
            out,
            sensors,
            size,
            chunk or _chunk_side(size),
            len(tiles),
            tiles_per_shard,
            settings,
            codec,
            layout,
            coarse_chunk=chunk is not None,
        )
    if not (out / "cells.parquet").exists():
        with atomic_write(out / "cells.parquet") as tmp:
            pq.write_table(_cells_table(sources, cells), tmp)
    n_shards = -(-len(tiles) // tiles_per_shard)
    todo = [
        j for j in range(n_shards) if not (out / "progress" / f"shard_{j:06d}.parquet").exists()
    ]
    done = n_shards - len(todo)
    if max_shards is not None:
        todo = todo[:max_shards]
    report = PrepareReport(tiles=len(tiles), shards=n_shards)
    job = partial(_prepare_shard, tile_size=size, tiles_per_shard=tiles_per_shard)
    init_args = (
        sources,
        cells,
        str(out),
        sensors,
        1 if workers else torch.get_num_threads(),
        layout,
    )

    def collect(res: dict[str, Any]) -> None:
        nonlocal done
        report.written += 1
        report.skipped.update(res["skipped"])
        report.messages += res["messages"][: 20 - len(report.messages)]
        report.clipped += res["clipped"]
        done += 1
        if progress is not None:
            progress(done, n_shards)

    if workers <= 0:
        _init_worker(*init_args)
        for j in todo:
            collect(job(j))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=init_args) as ex:
            for res in ex.map(job, todo):
                collect(res)
    finished = all((out / "progress" / f"shard_{j:06d}.parquet").exists() for j in range(n_shards))
    if finished:
        _finish(out, n_shards, sensors)
    report.seconds = time.perf_counter() - t0
    return report


def _create_store(
    out: Path,
    sensors: list[str],
    size: int,
    ch: int,
    n: int,
    tiles_per_shard: int,
    settings: dict[str, Any],
    codec: str,
    layout: dict[str, list[Group]],
    coarse_chunk: bool = False,
) -> None:
    """Create the arrays (chunks of ``ch`` px at 10 m; coarser arrays: of the same ground size
    with ``coarse_chunk``, else of at most 192 px of their own)."""
    import zarr
    from zarr.codecs import BloscCodec

    out.mkdir(parents=True, exist_ok=True)
    (out / "progress").mkdir(exist_ok=True)
    side = ch * -(-size // ch)
    cname: Any = codec  # one of CODECS (checked by prepare_shards)
    blosc = BloscCodec(cname=cname, clevel=CODECS[codec], shuffle="shuffle")
    group = zarr.open_group(str(out), mode="w")
    for s in sensors:
        for g in layout[s]:
            c, n_side = len(g.bands), _group_side(size, g)
            g_ch = ch if g.factor == 1 else _chunk_side(n_side)
            if g.factor > 1 and coarse_chunk:
                g_ch = -(-ch // g.factor)
            g_side = g_ch * -(-n_side // g_ch)
            group.create_array(
                g.array,
                shape=(n, c, n_side, n_side),
                dtype="uint16",
                chunks=(1, c, g_ch, g_ch),
                shards=(tiles_per_shard, c, g_side, g_side),
                compressors=blosc,
                fill_value=0,
            )
    group.create_array(
        "valid",
        shape=(n, len(sensors), size, size),
        dtype="bool",
        chunks=(1, len(sensors), ch, ch),
        shards=(tiles_per_shard, len(sensors), side, side),
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
        fill_value=False,
    )
    group.attrs.update(
        {
            "format": FORMAT,
            "version": VERSION,
            "sensors": sensors,
            "bands": {s: list(get_sensor(s).band_names) for s in sensors},
            "tile_size": size,
            "chunk": ch,
            "encodings": {
                s: {"scale": ENCODINGS[s].scale, "offset": ENCODINGS[s].offset, "dtype": "uint16"}
                for s in sensors
            },
            "settings": json.loads(json.dumps(settings)),
            "codec": codec,
            "layout": {
                s: [
                    {"array": g.array, "factor": g.factor, "halo": g.halo, "bands": list(g.bands)}
                    for g in gs
                ]
                for s, gs in layout.items()
            },
            "complete": False,
        }
    )


def _read_layout(attrs: dict[str, Any]) -> dict[str, list[Group]]:
    """The arrays of each sensor; a store of version 1 holds every band on the 10 m grid in one
    array named after the sensor (read as is)."""
    if "layout" not in attrs:
        return {
            s: [Group(s, 1, 0, tuple(range(get_sensor(s).num_bands)))] for s in attrs["sensors"]
        }
    return {
        s: [Group(g["array"], int(g["factor"]), int(g["halo"]), tuple(g["bands"])) for g in gs]
        for s, gs in attrs["layout"].items()
    }


def _finish(out: Path, n_shards: int, sensors: list[str]) -> None:
    parts = [pq.read_table(out / "progress" / f"shard_{j:06d}.parquet") for j in range(n_shards)]
    with atomic_write(out / "tiles.parquet") as tmp:
        pq.write_table(pa.concat_tables(parts), tmp)
    group = _open_group(str(out), "r+")
    group.attrs["complete"] = True


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class _ShardedArray:
    """Direct reads of a tile window from a Zarr v3 array of this store's layout.

    The arrays are written by ``zarr`` with the sharding codec (index at the end of each shard
    file: one little-endian (offset, nbytes) uint64 pair per inner chunk, C order, then a CRC32C)
    and Blosc-compressed inner chunks of one tile x all bands. Reading a window here costs one
    ranged read and one Blosc decode per chunk it touches, without zarr's per-call machinery
    (which costs about twice the decoding itself on 534 px tiles); the tests check it against
    ``zarr``'s own reads. Returns None from :meth:`open` for any other layout (zarr reads it).
    """

    def __init__(self, fs: Any, path: str, meta: dict[str, Any]) -> None:
        import numcodecs

        cfg = meta["codecs"][0]["configuration"]
        self.fs, self.path = fs, path
        self.shape = tuple(meta["shape"])
        self.dtype = np.dtype(
            "bool" if meta["data_type"] == "bool" else f"<{np.dtype(meta['data_type']).str[1:]}"
        )
        self.shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = tuple(cfg["chunk_shape"])
        self.grid = tuple(s // c for s, c in zip(self.shard, self.chunk))
        self.fill = meta["fill_value"]
        self.codec = numcodecs.Blosc()
        self._index: dict[int, np.ndarray] = {}
        # Local stores: ranged reads with os.pread on descriptors kept open per shard file
        # (no per-range path handling and file opening as in fsspec's ranged reads).
        from fsspec.implementations.local import LocalFileSystem

        self._local = isinstance(fs, LocalFileSystem)
        self._fds: dict[str, int] = {}

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def _ranges(self, file: str, starts: list[int], ends: list[int]) -> list[bytes]:
        """The byte ranges ``[start, end)`` of a shard file."""
        if not self._local:
            return list(self.fs.cat_ranges([file] * len(starts), starts, ends))
        fd = self._fds.get(file)
        if fd is None:
            if len(self._fds) >= 64:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        out = []
        for a, b in zip(starts, ends):
            blob = os.pread(fd, b - a, a)
            if len(blob) != b - a:
                raise ShardError(f"{file}: truncated shard file (wanted bytes {a}..{b})")
            out.append(blob)
        return out

    @classmethod
    def open(cls, fs: Any, path: str) -> _ShardedArray | None:
        meta = json.loads(fs.cat_file(f"{path}/zarr.json"))
        codecs = meta.get("codecs", [])
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            return None
        cfg = codecs[0]["configuration"]
        inner = [c["name"] for c in cfg["codecs"]]
        index = [c["name"] for c in cfg["index_codecs"]]
        key = meta.get("chunk_key_encoding", {})
        ok = (
            inner == ["bytes", "blosc"]
            and index == ["bytes", "crc32c"]
            and cfg.get("index_location", "end") == "end"
            and key.get("name") == "default"
            and key.get("configuration", {}).get("separator", "/") == "/"
            and len(meta["shape"]) == 4
            and cfg["chunk_shape"][0] == 1
            and cfg["chunk_shape"][1] == meta["shape"][1]
            and meta["chunk_grid"]["configuration"]["chunk_shape"][2:]
            >= [-(-d // c) * c for d, c in zip(meta["shape"][2:], cfg["chunk_shape"][2:])]
        )
        return cls(fs, path, meta) if ok else None

    def _shard_index(self, shard: int) -> np.ndarray | None:
        idx = self._index.get(shard)
        if idx is None:
            n = int(np.prod(self.grid))
            file = f"{self.path}/c/{shard}/0/0/0"
            try:
                size = self.fs.size(file)
            except FileNotFoundError:
                return None  # an empty shard: every chunk is the fill value
            (raw,) = self._ranges(file, [size - 16 * n - 4], [size - 4])
            idx = np.frombuffer(raw, "<u8").reshape((*self.grid, 2))
            if len(self._index) > 64:
                self._index.pop(next(iter(self._index)))
            self._index[shard] = idx
        return idx

    def read(self, row: int, box: tuple[int, int, int, int]) -> np.ndarray:
        top, left, h, w = box
        ch = self.chunk[2]
        shard, k = divmod(row, self.shard[0])
        idx = self._shard_index(shard)
        if idx is None:
            return np.full((self.shape[1], h, w), self.fill, self.dtype)
        wanted, starts, ends = [], [], []
        for r in range(top // ch, (top + h - 1) // ch + 1):
            for c in range(left // ch, (left + w - 1) // ch + 1):
                off, nbytes = (int(v) for v in idx[k, 0, r, c])
                if off == 2**64 - 1:  # chunk not stored: all fill value
                    continue
                wanted.append((r, c))
                starts.append(off)
                ends.append(off + nbytes)
        file = f"{self.path}/c/{shard}/0/0/0"
        n_chunks = ((top + h - 1) // ch - top // ch + 1) * ((left + w - 1) // ch - left // ch + 1)
        if len(wanted) == n_chunks:  # every chunk stored: each output pixel is written below
            out = np.empty((self.shape[1], h, w), self.dtype)
        else:
            out = np.full((self.shape[1], h, w), self.fill, self.dtype)
        blobs = self._ranges(file, starts, ends) if starts else []
        for (r, c), blob in zip(wanted, blobs):
            chunk = np.frombuffer(self.codec.decode(blob), self.dtype).reshape(self.chunk[1:])
            r0, c0 = r * ch, c * ch
            y0, y1 = max(top, r0), min(top + h, r0 + ch)
            x0, x1 = max(left, c0), min(left + w, c0 + ch)
            out[:, y0 - top : y1 - top, x0 - left : x1 - left] = chunk[
                :, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0
            ]
        return out


class ShardStore:
    """A prepared shard store opened for reading (local path or fsspec URL).

    Only the group's attributes and the two small tables are read up front; tile pixels are read
    per crop window by :meth:`read`. Array handles are opened per process. ``direct=False`` reads
    through ``zarr`` instead of the direct chunk reader (same values, more CPU).
    """

    def __init__(
        self,
        url: str | Path,
        storage_options: dict[str, object] | None = None,
        direct: bool = True,
    ) -> None:
        self.url = str(url).rstrip("/")
        self.direct = direct
        self.storage_options = dict(storage_options or {})
        try:
            group = _open_group(self.url, "r", self.storage_options)
        except Exception as e:
            raise ShardError(f"no shard store at {self.url}: {e}") from None
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT:
            raise ShardError(f"{self.url} is not a terrafm shard store (attributes {attrs})")
        if not attrs.get("complete"):
            raise ShardError(
                f"shard store {self.url} is incomplete: rerun `terrafm prepare` to finish it"
            )
        self.attrs = attrs
        self.sensors: tuple[str, ...] = tuple(attrs["sensors"])
        self.layout = _read_layout(attrs)
        self.tile_size = int(attrs["tile_size"])
        self.source_names: list[str] = list(attrs["settings"]["sources"])
        cells = self._table("cells.parquet")
        self.cells = _cells_from_table(cells, len(self.source_names))
        tiles = self._table("tiles.parquet").sort_values("index")
        if not np.array_equal(tiles["index"].to_numpy(), np.arange(len(tiles))):
            raise ShardError(f"{self.url}/tiles.parquet does not list tiles 0..{len(tiles) - 1}")
        self.height = tiles["height"].to_numpy(np.int32)
        self.width = tiles["width"].to_numpy(np.int32)
        # Compact per-tile facts (millions of tiles): the sensors read, as a bit mask in read
        # order, and the stored read errors only for the few tiles that have any.
        kinds = list(dict.fromkeys(tiles["order"]))
        self.order: list[list[str]] = [json.loads(o) for o in kinds]
        self.order_id = pd.Categorical(tiles["order"], categories=kinds).codes.astype(np.int16)
        self.errors = {
            int(i): json.loads(e) for i, e in zip(tiles["index"], tiles["errors"]) if e != "[]"
        }
        self.n_valid = {s: tiles[f"n_valid_{s}"].to_numpy(np.int64) for s in self.sensors}
        self.n_finite = {s: tiles[f"n_finite_{s}"].to_numpy(np.int64) for s in self.sensors}
        starts = {}
        k = 0
        for si, cs in enumerate(self.cells):
            for ci, c in enumerate(cs):
                starts[(si, ci)] = k
                k += c.n_tiles
        self.cell_start = starts
        self._arrays: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        return len(self.height)

    def _table(self, name: str) -> pd.DataFrame:
        fs, path = fsspec.core.url_to_fs(f"{self.url}/{name}", **self.storage_options)
        with fs.open(path, "rb") as f:
            return pq.read_table(f).to_pandas()

    def _array(self, name: str) -> Any:
        """A direct reader of array ``name`` (or zarr's own array for another layout)."""
        if os.getpid() != self._pid:
            self._arrays, self._pid = {}, os.getpid()
        a = self._arrays.get(name)
        if a is None:
            fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
            a = _ShardedArray.open(fs, f"{path}/{name}") if self.direct else None
            if a is None:
                a = _open_group(self.url, "r", self.storage_options)[name]
            self._arrays[name] = a
        return a

    def _window(self, name: str, row: int, box: tuple[int, int, int, int]) -> np.ndarray:
        a = self._array(name)
        if isinstance(a, _ShardedArray):
            return a.read(row, box)
        top, left, h, w = box
        return np.asarray(a[row, :, top : top + h, left : left + w])

    def row(self, source: int, cell: int, tile: int) -> int:
        """Store row of a tile."""
        return self.cell_start[(source, cell)] + tile

    def read(
        self, row: int, sensors: Sequence[str], box: tuple[int, int, int, int]
    ) -> tuple[dict[str, tuple[GroupWindow, ...]], np.ndarray]:
        """The stored values of ``sensors`` that ``box`` = (top, left, height, width) of the
        10 m grid needs, one :class:`~terrafm.data.batch_multicrop.GroupWindow` per array of the
        sensor (:func:`group_window`), and their valid masks (n_sensors, height, width) on the
        10 m grid; only the chunks the windows touch are decoded."""
        data = {s: tuple(self._group_window(g, row, box) for g in self.layout[s]) for s in sensors}
        idx = [self.sensors.index(s) for s in sensors]
        valid = self._window("valid", row, box)[idx]
        return data, valid

    def _group_window(self, g: Group, row: int, box: tuple[int, int, int, int]) -> GroupWindow:
        r0, r1, o_r = group_span(box[0], box[2], g.factor, g.halo)
        c0, c1, o_c = group_span(box[1], box[3], g.factor, g.halo)
        data = self._window(g.array, row, (r0, c0, r1 - r0, c1 - c0))
        return GroupWindow(data, g.factor, g.bands, (o_r, o_c))


def group_span(start: int, count: int, factor: int, halo: int) -> tuple[int, int, float]:
    """Stored pixels ``[lo, hi)`` of an array of native pixels ``factor`` x the 10 m grid (with
    ``halo`` extra pixels before the tile) that bilinear resampling needs for 10 m pixels
    ``start .. start + count`` of the tile, and ``origin``: pixel ``q`` of that 10 m window
    samples the stored window at ``origin + q / factor`` (pixel centres aligned, as
    :mod:`terrafm.io.resample`). For ``factor`` 1 the window is the box itself."""
    if factor == 1:
        return start, start + count, 0.0
    first = (start + 0.5) / factor - 0.5 + halo
    last = (start + count - 0.5) / factor - 0.5 + halo
    lo = int(np.floor(first))
    return lo, int(np.floor(last)) + 2, first - lo


class ShardTiles:
    """The curated tiles of a shard store: the same table (and so the same indices, strata and
    sampler stream) as :class:`terrafm.data.dataset.TileDataset` builds from the sources.

    Args:
        store: the opened store.
        sensors: sensors to read (a subset of the store's).
        refs: the curated tiles.
        max_invalid: largest share of invalid pixels per sensor tile.
        require_all: see :class:`terrafm.data.dataset.TileDataset`.
        cells: per source, the store cell of each curated cell index (default: the same).
    """

    def __init__(
        self,
        store: ShardStore,
        sensors: Sequence[str],
        refs: TileTable,
        *,
        max_invalid: float = 0.5,
        require_all: bool = True,
        cells: list[list[int]] | None = None,
    ) -> None:
        if not len(refs):
            raise ShardError("no tiles to read: every cell was curated out or the store is empty")
        self.cells = cells
        self.store = store
        self.sensors = tuple(sensors)
        self.refs = refs
        self.max_invalid = max_invalid
        self.require_all = require_all

    def __len__(self) -> int:
        return len(self.refs)

    def strata(self) -> np.ndarray:
        return self.refs.stratum_ids

    def status(self, index: int) -> tuple[int, list[str], list[SampleError]]:
        """(store row, readable sensors, dropped-sensor errors) of tile ``index``, by the rules
        of :meth:`terrafm.data.dataset.TileDataset.load` (message for message).

        Raises:
            SampleError: the tile cannot be used.
        """
        ref = self.refs[index]
        st = self.store
        cell = self.cells[ref.source][ref.cell] if self.cells is not None else ref.cell
        row = st.row(ref.source, cell, ref.tile)
        where = f"{st.source_names[ref.source]} tile {ref.name}"
        stored = st.errors.get(row, [])  # [reason, where, detail, sensor]
        errors = [SampleError(r, w, d) for r, w, d, s in stored if not s or s in self.sensors]
        ok: list[str] = []
        for s in st.order[st.order_id[row]]:
            if s not in self.sensors:
                continue
            size = int(st.height[row]) * int(st.width[row])
            n_valid, n_finite = int(st.n_valid[s][row]), int(st.n_finite[s][row])
            if n_valid == 0:
                what = "all pixels non-finite" if n_finite == 0 else "all pixels no-data/cloud"
                errors.append(SampleError("all_nodata", where, f"{s}: {what}"))
                continue
            bad = 1.0 - n_valid / size
            if bad > self.max_invalid:
                nan_part = 1.0 - n_finite / size
                errors.append(
                    SampleError(
                        "too_invalid",
                        where,
                        f"{s}: {bad:.0%} invalid pixels (non-finite {nan_part:.0%}) > "
                        f"max_invalid {self.max_invalid:.0%}",
                    )
                )
                continue
            ok.append(s)
        if errors and (self.require_all or not ok):
            raise errors[0]
        if not ok:
            raise SampleError("missing_sensor", where, "no sensor readable")
        return row, [s for s in self.sensors if s in ok], errors


def _error_sensor(e: SampleError, sensors: Sequence[str]) -> str:
    """The sensor a read error is about ('' when it cannot be told): from the Major-TOM product
    that opens the message, a folder source's ``(sensor)``, or a ``sensor:`` / ``no sensor``
    detail."""
    from terrafm.data.majortom import SENSOR_PRODUCT

    for s in sensors:
        if (
            e.where.startswith(f"{SENSOR_PRODUCT.get(s, '?')} ")
            or f"({s})" in e.where
            or e.detail.startswith(f"{s}:")
            or e.detail.startswith(f"no {s} ")
        ):
            return s
    return ""


def _shift(plan: ViewPlan, top: int, left: int) -> ViewPlan:
    def sh(boxes: tuple[tuple[int, int, int, int], ...]) -> tuple[tuple[int, int, int, int], ...]:
        return tuple((b[0] - top, b[1] - left, b[2], b[3]) for b in boxes)

    return replace(plan, g_boxes=sh(plan.g_boxes), l_boxes=sh(plan.l_boxes))


class ShardViewDataset(KeyedDataset):
    """Raw read windows and view plans keyed like :class:`terrafm.data.dataset.MultiCropDataset`.

    For a sampler key it applies the same skip and substitute rules, draws the same
    :class:`~terrafm.data.multicrop.ViewPlan` from the same generator, and reads from the store
    only the window holding all crop boxes, for only the sensors some view uses. The views are
    cut later, batched (:class:`terrafm.data.batch_multicrop.BatchMultiCrop`).
    """

    def __init__(
        self,
        tiles: ShardTiles,
        views: MultiCropConfig,
        *,
        seed: int = 0,
        fail_fast: bool = False,
        max_retries: int = 16,
    ) -> None:
        super().__init__(tiles, seed=seed, fail_fast=fail_fast, max_retries=max_retries)
        self.views = views
        self._logged: set[int] = set()

    def _log_once(self, index: int, e: SampleError) -> None:
        if index not in self._logged:  # logged once per process, like the parquet path
            self._logged.add(index)
            log.warning("skipped sample: %s", e)

    def __getitem__(self, key: SampleKey | int) -> dict[str, object]:
        index, (row, available, _), skipped, rng = self._resolve(
            key, self.tiles.status, self._log_once
        )
        store = self.tiles.store
        height, width = int(store.height[row]), int(store.width[row])
        plan = plan_views(self.views, rng, height, width, available)
        used = [s for s in self.sensors if s in plan.used()]
        box = plan.bounds()
        data, valid = store.read(row, used, box)
        return {
            "raw": data,
            "valid": {s: valid[k] for k, s in enumerate(used)},
            "plan": _shift(plan, box[0], box[1]),
            "landcover": self.tiles.refs[index].landcover,
            "index": index,
            "skipped": skipped,
        }


def collate_raw(samples: Sequence[dict[str, Any]], sensors: Sequence[str]) -> dict[str, Any]:
    """Stack read windows into batch tensors: per sensor, one dict per stored group with
    ``data`` (B, C_g, h, w) uint16 (zero-padded to the largest window), ``origin`` (B, 2) (see
    :class:`~terrafm.data.batch_multicrop.GroupWindow`), ``factor`` and ``bands``; and per sensor
    (B, H, W) valid masks on the 10 m grid, plus the plans. Padding is never inside a crop box;
    it is marked valid so that only samples with invalid pixels of their own need masking."""
    height = max(next(iter(s["valid"].values())).shape[0] for s in samples)
    width = max(next(iter(s["valid"].values())).shape[1] for s in samples)
    raw: dict[str, list[dict[str, Any]]] = {}
    valid: dict[str, torch.Tensor] = {}
    for s in sensors:
        have = [k for k, smp in enumerate(samples) if s in smp["raw"]]
        if not have:
            continue
        first: tuple[GroupWindow, ...] = samples[have[0]]["raw"][s]
        groups = []
        for j, g in enumerate(first):
            wins = [samples[k]["raw"][s][j] for k in have]
            if g.factor == 1:
                hn, wn = height, width
            else:
                hn = max(w.data.shape[1] for w in wins)
                wn = max(w.data.shape[2] for w in wins)
            r = np.zeros((len(samples), len(g.bands), hn, wn), np.uint16)
            origin = np.zeros((len(samples), 2))
            for k, w in zip(have, wins):
                r[k, :, : w.data.shape[1], : w.data.shape[2]] = w.data
                origin[k] = w.origin
            groups.append(
                {
                    "data": torch.from_numpy(r),
                    "origin": origin,
                    "factor": g.factor,
                    "bands": g.bands,
                }
            )
        v = np.ones((len(samples), height, width), bool)
        for k in have:
            vk = samples[k]["valid"][s]
            v[k, : vk.shape[0], : vk.shape[1]] = vk
        raw[s], valid[s] = groups, torch.from_numpy(v)
    return {
        "raw": raw,
        "valid": valid,
        "plans": [s["plan"] for s in samples],
        "landcover": torch.tensor([int(s["landcover"]) for s in samples], dtype=torch.long),
        "index": torch.tensor([int(s["index"]) for s in samples], dtype=torch.long),
        "skipped": [r for s in samples for r in s["skipped"]],
    }


def _collate_and_augment(
    samples: Sequence[dict[str, Any]], sensors: Sequence[str], augment: BatchMultiCrop | None
) -> dict[str, Any]:
    if augment is not None and augment.resize == "taps":
        return augment.from_samples(samples)  # views cut on the CPU, window by window
    raw = collate_raw(samples, sensors)
    return augment(raw) if augment is not None else raw


def build_shard_dataset(
    path: str | Path,
    sensors: Sequence[str],
    *,
    views: MultiCropConfig | None = None,
    curation: Any = None,
    quality: Any = None,
    seed: int = 0,
    storage_options: dict[str, object] | None = None,
) -> ShardViewDataset:
    """Open a store and curate its cells like :func:`terrafm.data.loader.build_pretrain_dataset`.

    Raises:
        ValueError: the store lacks a requested sensor, or is incomplete.
    """
    from terrafm.data.loader import CurationConfig, QualityConfig

    cur, qual = curation or CurationConfig(), quality or QualityConfig()
    store = ShardStore(path, storage_options)
    missing = [s for s in sensors if s not in store.sensors]
    if missing:
        raise ShardError(
            f"shard store {store.url} has no {missing} (it holds {list(store.sensors)})"
        )
    # The store's cells restricted to the requested sensors; with require_all, cells lacking
    # one are dropped (as the sources' pairing drops them). ``kept`` maps back to store cells.
    cells: list[list[CellInfo]] = []
    kept: list[list[int]] = []
    dropped = 0
    for cs in store.cells:
        cells.append([])
        kept.append([])
        for ci, c in enumerate(cs):
            have = tuple(s for s in c.sensors if s in sensors)
            if not have or (cur.require_all and len(have) < len(sensors)):
                dropped += 1
                continue
            cells[-1].append(replace(c, sensors=have))
            kept[-1].append(ci)
    refs, report = curate(
        cells, ocean_keep=cur.ocean_keep, ocean_min_water=cur.ocean_min_water, seed=seed
    )
    if dropped:
        report["cells_missing_sensor"] += dropped
    log.info("pretraining shards: %s", dict(report))
    tiles = ShardTiles(
        store, sensors, refs, max_invalid=qual.max_invalid, require_all=cur.require_all, cells=kept
    )
    ds = ShardViewDataset(
        tiles,
        views or MultiCropConfig(),
        seed=seed,
        fail_fast=qual.fail_fast,
        max_retries=qual.max_retries,
    )
    ds.report = report  # type: ignore[attr-defined]
    return ds


def build_shard_loader(
    path: str | Path,
    sensors: Sequence[str],
    batch_size: int,
    *,
    views: MultiCropConfig | None = None,
    curation: Any = None,
    quality: Any = None,
    samples_per_epoch: int | None = None,
    replacement: bool = True,
    balance: float = 1.0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    augment_device: str = "auto",
    storage_options: dict[str, object] | None = None,
) -> Any:
    """The pretraining loader over a shard store: arguments as
    :func:`terrafm.data.loader.build_pretrain_loader`, plus ``augment_device`` (``cpu``: views are
    cut in the DataLoader workers; ``cuda``: the workers deliver read windows and the views are
    cut on the GPU in the main process; ``auto``: cuda when available).
    """
    from terrafm.data.loader import make_loader

    views = views or MultiCropConfig()
    ds = build_shard_dataset(
        path,
        sensors,
        views=views,
        curation=curation,
        quality=quality,
        seed=seed,
        storage_options=storage_options,
    )
    device = resolve_device(augment_device)
    in_workers = device.type == "cpu"
    augment = BatchMultiCrop(views, ds.sensors, {s: ENCODINGS[s] for s in sensors}, device)
    return make_loader(
        ds,
        batch_size,
        partial(_collate_and_augment, sensors=ds.sensors, augment=augment if in_workers else None),
        samples_per_epoch=samples_per_epoch,
        replacement=replacement,
        balance=balance,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
        augment=None if in_workers else augment,
        error=ShardError,
    )
