"""``terrafm data``: check pretraining roots before a long run (curation, strata, a read scan)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "roots", nargs="+", help="Major-TOM roots (local or fsspec URLs) or GeoTIFF folders"
    )
    p.add_argument(
        "--sensors", nargs="+", default=["s1", "s2_l1c", "s2_l2a"], help="sensor keys to pair"
    )
    p.add_argument(
        "--scan", type=int, default=16, help="tiles to read through the pipeline (0: none)"
    )
    p.add_argument("--ocean-keep", type=float, default=0.02, help="fraction of ocean cells kept")
    p.add_argument("--any-sensor", action="store_true", help="keep cells with at least one sensor")
    p.add_argument(
        "--max-invalid", type=float, default=0.5, help="max no-data/cloud share per tile"
    )
    p.add_argument("--tile-size", type=int, default=534, help="tile side for GeoTIFF folders")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first bad tile")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from terrafm.data.inspect import inspect_roots
    from terrafm.data.loader import CurationConfig, QualityConfig

    report = inspect_roots(
        args.roots,
        args.sensors,
        curation=CurationConfig(
            require_all=not args.any_sensor, ocean_keep=args.ocean_keep, tile_size=args.tile_size
        ),
        quality=QualityConfig(max_invalid=args.max_invalid, fail_fast=args.fail_fast),
        scan=args.scan,
        seed=args.seed,
    )
    print(report.format())
    return 0 if report.scanned == 0 or report.skips.total < report.scanned else 1
