"""Probe pretrained encoders against random init on a large held-out evaluation world.

The quickstart's own test split is small (it must fit the 15-minute budget), so one run's gains move
by several points with the draw of the world. This script measures the same protocols as
``terrafm quickstart`` (``terrafm.quickstart.evaluate``: kNN at 1 % and 100 % of the labels, linear
probe, segmentation probe, RankMe) on a separate, larger world of held-out cells — by default about
five times the quickstart's test split — for any number of encoders, and prints one table.

    .venv/bin/python benchmarks/quickstart_probe.py runs/quickstart/pretrain/full/encoder.safetensors \\
        random:0 random:1 [--sensors s2_l2a s1 s1+s2_l2a] [--world runs/probe-world]

An encoder is a ``.safetensors`` / ``.pth`` file loaded with :func:`terrafm.models.load_model`,
``random:SEED``, a random-init ``--model`` drawn after ``torch.manual_seed(SEED)`` (the
quickstart's random baseline is ``random:<pretraining seed>``), or ``pixels``: the normalised input
itself (:class:`terrafm.eval.baselines.PixelEncoder`; patch tokens = the raw 16 x 16 patches, CLS =
per-band mean and std), what a linear read-out of the pixels reaches (its segmentation probe maps
3072 values per patch: about 10 minutes). The world (``--world``) is generated
once (``--seed 7``, ``--cells-per-class 48``, about 40 s) and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from terrafm.quickstart.evaluate import ProbeConfig


def _world(path: Path, seed: int, per_class: int) -> Path:
    from terrafm.world.generate import make_world, world_config

    cfg = world_config(
        "quickstart",
        seed=seed,
        cells=4,  # the products are not used: only the held-out task cells
        task_cells_per_class=per_class,
        min_purity=0.7,
        seg_chip=64,
        seg_chips_per_cell=4,
    )
    make_world(path, cfg)  # reuses a complete world with the same config
    return path / "tasks"


def _encoder(spec: str, model: str) -> torch.nn.Module:
    from terrafm.eval.baselines import PixelEncoder
    from terrafm.models import create_model, load_model

    if spec == "pixels":
        return PixelEncoder()
    if spec.startswith("random:"):
        torch.manual_seed(int(spec.split(":", 1)[1]))
        return create_model(model)
    return load_model(spec)


def patch_majority_miou(seg_task: Any, patch: int = 16) -> float:
    """mIoU of painting each patch of the test masks with its majority class (the ceiling of a
    probe whose tokens know exactly the dominant class of their patch)."""
    from terrafm.eval.baselines import patch_majority
    from terrafm.eval.metrics import SegmentationMeter

    meter = SegmentationMeter(seg_task.num_classes, seg_task.ignore_index)
    for item in seg_task.dataset("test", ("s2_l2a",)):
        m = item["mask"][None]  # (1, H, W)
        meter.update(patch_majority(m, seg_task.num_classes, seg_task.ignore_index, patch), m)
    return float(meter.compute()["miou"])  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("encoders", nargs="+", help="checkpoint files, random:SEED or pixels")
    p.add_argument("--model", default="terrafm_tiny", help="architecture of random:SEED encoders")
    p.add_argument("--sensors", nargs="+", default=["s2_l2a"], help="e.g. s2_l2a s1 s1+s2_l2a")
    p.add_argument("--world", default="runs/probe-world")
    p.add_argument("--seed", type=int, default=7, help="world seed")
    p.add_argument("--cells-per-class", type=int, default=48)
    p.add_argument("--draws", type=int, default=20, help="draws of the 1 %% subset")
    p.add_argument(
        "--seg-epochs",
        type=int,
        default=ProbeConfig.seg_epochs,
        help="segmentation-probe epochs (the protocol's 50 by default; fewer for a quick "
        "comparison of worlds, the raw-pixel probe costs about 12 CPU seconds per epoch)",
    )
    p.add_argument("--json", help="also write every result to this JSON-lines file")
    p.add_argument(
        "--oracle", action="store_true", help="also print the patch-majority mIoU ceiling"
    )
    args = p.parse_args()

    from terrafm.eval import load_task
    from terrafm.quickstart.evaluate import evaluate_encoder

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tasks = _world(Path(args.world), args.seed, args.cells_per_class)
    print(f"evaluation world {args.world} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cls = load_task("folder", "landcover_cls", tasks)
    seg = load_task("folder", "landcover_seg", tasks)
    sets = [tuple(s.split("+")) for s in args.sensors]
    cfg = ProbeConfig(fraction_draws=args.draws, seg_epochs=args.seg_epochs)
    out = open(args.json, "a") if args.json else None
    rows = []
    for spec in args.encoders:
        t = time.perf_counter()
        res = evaluate_encoder(_encoder(spec, args.model).eval(), cls, seg, sets, cfg, seed=0)
        for sensors, r in res.items():
            rows.append((spec, sensors, r))
            if out is not None:
                out.write(json.dumps({"encoder": spec, "sensors": sensors, **r}) + "\n")
                out.flush()
        print(f"{spec}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    r0 = rows[0][2]
    print(
        f"\nheld-out world: {r0['n_train']} / {r0['n_test']} train / test chips (classification), "
        f"{r0['n_train_chips']} / {r0['n_test_chips']} (segmentation); 1 % = "
        f"{sum(r0['fraction_train_sizes']) / len(r0['fraction_train_sizes']):.0f} chips, "
        f"mean of {args.draws} draws"
    )
    print("| encoder | sensors | kNN 1 % | kNN 100 % | linear | mIoU | RankMe CLS | RankMe patch |")
    print("|---|---|---|---|---|---|---|---|")
    for spec, sensors, r in rows:
        print(
            f"| {spec} | {sensors} | {r['knn_top1_fraction']:.1f} | {r['knn_top1_full']:.1f} | "
            f"{r['linear_top1']:.1f} | {r['miou']:.1f} | {r['rankme_cls']:.1f} | "
            f"{r['rankme_patch']:.1f} |"
        )
    if args.oracle:
        print(
            f"\npatch-majority oracle (each 16 x 16 patch painted with its majority class): "
            f"mIoU {patch_majority_miou(seg):.1f}"
        )
    if out is not None:
        out.close()


if __name__ == "__main__":
    main()
