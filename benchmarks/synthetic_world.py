"""Generation cost of the built-in synthetic world ("generates in under a minute").

Generates each requested preset into a temp folder, single process, and prints wall time, CPU
time (this process), peak resident memory, what was written (cells, task chips) and the size on
disk per part, plus a per-stage split of one cell's cost measured on a few cells.

    .venv/bin/python benchmarks/synthetic_world.py [--presets quickstart default] [--cells N]
        [--cell-size PX] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from terrafm.data.majortom import PRODUCTS, _image_row
from terrafm.world.cells import render_s1, render_s2, render_scene, render_surface
from terrafm.world.generate import make_world, plan_world, render_product, world_config


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _stages(preset: str, cells: int | None, cell_size: int | None, n: int = 8) -> dict[str, float]:
    """Milliseconds per cell of each rendering stage and of the writer's encoding."""
    cfg = world_config(preset, cells=n, cell_size=cell_size, task_cells_per_class=0)
    plans = plan_world(cfg).pretrain
    acc: dict[str, float] = {}

    def timed(name: str, fn, *a):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = fn(*a)
        acc[name] = acc.get(name, 0.0) + (time.perf_counter() - t) * 1000 / len(plans)
        return out

    for p in plans:
        scene = timed("scene", render_scene, p)
        surface = timed("surface (L2A 10 m)", render_surface, p, scene)
        timed("S2 L2A bands", render_s2, p, scene, surface, "L2A")
        timed("S2 L1C bands", render_s2, p, scene, surface, "L1C")
        timed("S1 VV/VH", render_s1, p, scene)
        for product in PRODUCTS:
            if product in p.products:
                sample = render_product(p, product)
                timed(f"encode {product} (writer)", _image_row, PRODUCTS[product], sample)
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["quickstart", "default"])
    ap.add_argument("--cells", type=int, help="override the presets' cell count")
    ap.add_argument("--cell-size", type=int, help="override the presets' cell size")
    ap.add_argument("--keep", type=Path, help="write the worlds here instead of a temp folder")
    args = ap.parse_args()

    print(
        "| preset | cells x px | held-out cells | cls / seg chips | wall s | CPU s | peak RSS MB "
        "| products MB | tasks MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        cfg = world_config(preset, cells=args.cells, cell_size=args.cell_size)
        tmp = Path(tempfile.mkdtemp(prefix="terrafm-world-"))
        out = (args.keep or tmp) / preset
        if out.exists():
            shutil.rmtree(out)
        cpu0, t0 = time.process_time(), time.perf_counter()
        manifest = make_world(out, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tasks = manifest["tasks"]
        chips = "/".join(
            str(sum(tasks[t]["samples"].values())) for t in ("landcover_cls", "landcover_seg")
        )
        products = sum(_size_mb(out / p) for p in PRODUCTS)
        print(
            f"| {preset} | {cfg.cells} x {cfg.cell_size} | {len(manifest['heldout_cells'])} | {chips} "
            f"| {wall:.1f} | {cpu:.1f} | {rss:.0f} | {products:.0f} | {_size_mb(out / 'tasks'):.0f} |"
        )
        if args.keep is None:
            shutil.rmtree(tmp)
    print()
    print("| stage (ms per cell) | " + " | ".join(args.presets) + " |")
    print("|---|" + "---|" * len(args.presets))
    stages = [_stages(p, None, args.cell_size) for p in args.presets]
    for name in stages[0]:
        print(f"| {name} | " + " | ".join(f"{s[name]:.1f}" for s in stages) + " |")


if __name__ == "__main__":
    main()
