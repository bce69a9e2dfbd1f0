"""``terrafm prepare``: convert pretraining sources into training shards once (resumable)."""

from __future__ import annotations

import argparse

from terrafm.commands.data import ANY_SENSOR
from terrafm.config import Flag, add_settings_arguments, settings_from_args
from terrafm.data.loader import CurationConfig

# The curation fields shown as flags (mapped onto the data library's own config).
_CURATION = (
    Flag("tiles_per_side", help="Major-TOM cell split (2: 4 tiles)"),
    Flag("tile_size", help="tile side for GeoTIFF folders"),
    ANY_SENSOR,
    Flag("max_cloud_cover", help="drop S2 rows above this cloud cover (%%)"),
    Flag("max_nodata", help="drop rows above this no-data fraction"),
    Flag("s1_unit", help="S1 unit of GeoTIFF folders", kwargs={"choices": ["dB", "linear"]}),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "roots",
        nargs="+",
        help="Major-TOM roots (local or fsspec URLs), GeoTIFF folders or the built-in world",
    )
    p.add_argument("--out", required=True, help="shard store folder (created; rerun to resume)")
    p.add_argument("--sensors", nargs="+", default=["s1", "s2_l1c", "s2_l2a"], help="sensor keys")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: this process)")
    p.add_argument("--tiles-per-shard", type=int, default=16, help="tiles per shard file")
    add_settings_arguments(p, CurationConfig, _CURATION, config_flags=False)
    p.add_argument(
        "--codec",
        default="zstd",
        choices=["zstd", "lz4hc"],
        help="chunk compression: zstd (smaller) or lz4hc (~1.25x bigger, ~3.5x faster to decode)",
    )
    p.add_argument(
        "--grid-10m",
        action="store_true",
        help="store every band resampled to the 10 m grid (default: each band at its native "
        "resolution where the source reads it, see docs/data.md)",
    )


def run(args: argparse.Namespace) -> int:
    from terrafm.data.shards import prepare_shards

    def progress(done: int, total: int) -> None:
        print(f"shard {done}/{total}", flush=True)

    report = prepare_shards(
        args.roots,
        args.out,
        args.sensors,
        curation=settings_from_args(args, CurationConfig, _CURATION),
        workers=args.workers,
        tiles_per_shard=args.tiles_per_shard,
        codec=args.codec,
        native=not args.grid_10m,
        progress=progress,
    )
    print(report.format())
    return 0
