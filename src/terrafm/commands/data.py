"""``terrafm data``: check pretraining roots before a long run (curation, strata, a read scan)."""

from __future__ import annotations

import argparse

from terrafm.config import Flag, add_settings_arguments, settings_from_args
from terrafm.data.loader import CurationConfig, QualityConfig

# ``--any-sensor``: keep a cell that lacks some of the sensors (``CurationConfig.require_all``).
ANY_SENSOR = Flag(
    flag="--any-sensor",
    help="keep cells with at least one sensor",
    to=lambda given: {"require_all": False},
    kwargs={"action": "store_true"},
)

# The curation and quality fields shown as flags (mapped onto the data library's own configs).
_CURATION = (
    Flag("ocean_keep", help="fraction of ocean cells kept"),
    ANY_SENSOR,
    Flag("tile_size", help="tile side for GeoTIFF folders"),
)
_QUALITY = (
    Flag("max_invalid", help="max no-data/cloud share per tile"),
    Flag("fail_fast", help="stop at the first bad tile"),
)


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
    add_settings_arguments(p, CurationConfig, _CURATION, config_flags=False)
    add_settings_arguments(p, QualityConfig, _QUALITY, config_flags=False)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from terrafm.data.inspect import inspect_roots

    report = inspect_roots(
        args.roots,
        args.sensors,
        curation=settings_from_args(args, CurationConfig, _CURATION),
        quality=settings_from_args(args, QualityConfig, _QUALITY),
        scan=args.scan,
        seed=args.seed,
    )
    print(report.format())
    return 0 if report.scanned == 0 or report.skips.total < report.scanned else 1
