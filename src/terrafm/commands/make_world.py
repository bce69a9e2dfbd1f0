"""``terrafm make-world``: generate the built-in synthetic multi-sensor world.

Writes Major-TOM products (S2L2A, S2L1C, S1RTC), ``landcover.parquet``, WorldCover rasters and the
held-out downstream tasks into ``--out``; see ``docs/synthetic_world.md``.
"""

from __future__ import annotations

import argparse
import time

from terrafm.world.generate import PRESETS, WorldError, make_world, world_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--preset", default="quickstart", choices=sorted(PRESETS), help="world size")
    p.add_argument("--seed", type=int, help="world seed (default 0)")
    p.add_argument("--cells", type=int, help="number of pretraining grid cells")
    p.add_argument("--cell-size", type=int, help="cell side in px at 10 m (multiple of 6)")
    p.add_argument(
        "--task-cells-per-class", type=int, help="held-out cells per WorldCover class (tasks)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a world already in --out")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = world_config(
            args.preset,
            seed=args.seed,
            cells=args.cells,
            cell_size=args.cell_size,
            task_cells_per_class=args.task_cells_per_class,
        )
        t0 = time.perf_counter()
        manifest = make_world(args.out, cfg, overwrite=args.overwrite)
    except WorldError as e:
        print(f"terrafm make-world: error: {e}")
        return 2
    products = ", ".join(f"{k} {v}" for k, v in manifest["products"].items())
    print(f"world in {args.out} ({time.perf_counter() - t0:.1f} s): cells {products}")
    for name, task in manifest["tasks"].items():
        splits = ", ".join(f"{k} {v}" for k, v in sorted(task["samples"].items())) or "no samples"
        print(f"  tasks/{name}: {task['task']}, {len(task['classes'])} classes, {splits}")
    return 0
