"""``terrafm export``: a pretraining run's encoder as published-layout ``.pth`` + ``.safetensors``."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    p.add_argument(
        "--out",
        required=True,
        help="output path without suffix; writes OUT.pth (published TerraFM layout) and "
        "OUT.safetensors (with metadata)",
    )
    p.add_argument(
        "--weights",
        choices=("teacher", "student"),
        default="teacher",
        help="which network's backbone to export (default: teacher, as DINO evaluates)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing OUT.pth / OUT.safetensors"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from terrafm.ssl.export import export_run
    from terrafm.weights.checkpoint import CheckpointError

    try:
        pth, st = export_run(
            args.checkpoint, args.out, which=args.weights, overwrite=args.overwrite
        )
    except CheckpointError as e:
        logging.getLogger("terrafm.export").error("%s", e)
        return 2
    print(f"wrote {pth}\nwrote {st}")
    return 0
