"""Few-shot kNN, a linear probe and a segmentation probe on the real samples in ../shared/data/real.

Compares a random-initialised encoder with a pretrained one on:

- EuroSAT-MS (200 real Sentinel-2 L1C images, 10 classes): kNN (k = 20 and 5) with 1, 5 and 10
  training images per class (mean and spread over 3 seeded draws) and a linear probe on the 10-shot
  set; the test set is the other 100 images. Bands are mapped by name (B8A is the files' last band).
- Sen1Floods11 (one real 512 x 512 chip, S1 + S2 L1C + hand-labelled water): cut into 64 px tiles,
  left half train / right half test, patch linear probe (mIoU, water IoU) on S1 alone, S2 alone and
  S1 + S2 fused.

There are no published weights in this repository, so the pretrained column needs ``--checkpoint``:
a ``.safetensors`` encoder exported by ``terrafm pretrain`` (its variant is read from the file) or a
published ``TerraFM-B.pth`` with ``--model terrafm_base``. Without one, only the random-init column
is measured and the script says so; nothing is made up.

    .venv/bin/python benchmarks/eval_real.py [--checkpoint runs/pretrain/encoder.safetensors]
        [--model terrafm_tiny] [--epochs 50] [--device cpu] [--out runs/eval_real.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rasterio
import torch

import terrafm
from terrafm.eval import evaluate, load_task
from terrafm.eval.datasets.scene import SceneRaster, scene_to_folder
from terrafm.models import load_model

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SHOTS = (1, 5, 10)
SEEDS = (0, 1, 2)


def _models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    torch.manual_seed(args.seed)
    if args.checkpoint and args.checkpoint.endswith(".safetensors"):
        pretrained = load_model(args.checkpoint)
        arch = pretrained.cfg
        random = terrafm.TerraFM(arch)
    else:
        random = terrafm.create_model(args.model)
        pretrained = (
            terrafm.create_model(args.model, pretrained=args.checkpoint)
            if args.checkpoint
            else None
        )
    models = {"random init": random.eval()}
    if pretrained is not None:
        models["pretrained"] = pretrained.eval()
    return models


def _flood_task(tmp: Path) -> Any:
    d = REAL / "sen1floods11-sample"
    with rasterio.open(d / "S2" / "Spain_7370579_S2Hand.tif") as s:
        s2, bands = s.read(), list(s.descriptions)
    with rasterio.open(d / "S1" / "Spain_7370579_S1Hand.tif") as s:
        s1 = s.read()
    with rasterio.open(d / "Labels" / "Spain_7370579_LabelHand.tif") as s:
        label = s.read(1)
    rasters = {"s2_l1c": SceneRaster(s2, bands, "DN"), "s1": SceneRaster(s1, ["VV", "VH"], "dB")}
    root = scene_to_folder(
        tmp / "sen1floods11", "sen1floods11", rasters, label, {0: "dry", 1: "water"}, tile=64
    )
    return load_task("folder", None, root)


def _row(rows: list[dict[str, Any]], task: str, protocol: str, sensors: str, train: str, metric: str,
         model: str, values: list[float]) -> None:  # fmt: skip
    rows.append({"task": task, "protocol": protocol, "sensors": sensors, "train": train, "metric": metric,
                 "model": model, "mean": statistics.fmean(values),
                 "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "runs": len(values)})  # fmt: skip


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    models = _models(args)
    rows: list[dict[str, Any]] = []
    common = {"device": args.device, "progress": False}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        eurosat = load_task("eurosat", None, REAL / "eurosat-ms-geotorchai", train_per_class=10,
                            fractions=(0.0, 0.0, 1.0), seed=args.seed)  # fmt: skip
        floods = _flood_task(tmp)
        for name, model in models.items():
            cache = str(tmp / f"cache-{name.replace(' ', '_')}")
            t0 = time.perf_counter()
            for shots in SHOTS:
                runs = [
                    evaluate(model, eurosat, "knn", shots=shots, seed=s, cache_dir=cache, **common)
                    for s in SEEDS
                ]
                for k in (20, 5):
                    _row(rows, "EuroSAT-MS (real)", f"kNN k={k}", "s2_l1c", f"{shots}/class", "top1", name,
                         [r.metrics[f"top1@k{k}"] for r in runs])  # fmt: skip
            lin = [evaluate(model, eurosat, "linear", epochs=args.epochs, batch_size=16, seed=s, cache_dir=cache, **common)
                   for s in SEEDS]  # fmt: skip
            _row(rows, "EuroSAT-MS (real)", "linear probe", "s2_l1c", "10/class", "top1", name,
                 [r.metrics["top1"] for r in lin])  # fmt: skip
            for sensors in ("s1", "s2_l1c", "s1,s2_l1c"):
                seg = evaluate(model, floods, "seg-linear", sensors, epochs=args.epochs, batch_size=16, lr=1e-2,
                               cache_dir=cache, **common)  # fmt: skip
                for metric in ("miou", "iou_water"):
                    _row(rows, "Sen1Floods11 chip (real)", "patch linear probe", sensors.replace(",", "+"),
                         f"{seg.counts.train} tiles", metric, name, [seg.metrics[metric]])  # fmt: skip
            print(f"[{name}] measured in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]], models: list[str]) -> str:
    keys: list[tuple] = []
    for r in rows:
        k = (r["task"], r["protocol"], r["sensors"], r["train"], r["metric"])
        if k not in keys:
            keys.append(k)
    head = "| task | protocol | sensors | training labels | metric | " + " | ".join(models)
    head += " | pretrained - random |" if len(models) == 2 else " |"
    lines = [head, "|" + "---|" * (5 + len(models) + (len(models) == 2))]
    for k in keys:
        vals = {
            r["model"]: r
            for r in rows
            if (r["task"], r["protocol"], r["sensors"], r["train"], r["metric"]) == k
        }
        cells = [f"{vals[m]['mean']:.1f} ± {vals[m]['std']:.1f}" if vals[m]["runs"] > 1 else f"{vals[m]['mean']:.1f}"
                 for m in models]  # fmt: skip
        line = "| " + " | ".join(k) + " | " + " | ".join(cells) + " |"
        if len(models) == 2:
            line += f" {vals[models[1]]['mean'] - vals[models[0]]['mean']:+.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        help="pretrained encoder (.safetensors from terrafm pretrain, or a published .pth)",
    )
    p.add_argument(
        "--model", default="terrafm_tiny", help="variant for random init / a .pth checkpoint"
    )
    p.add_argument("--epochs", type=int, default=50, help="linear / segmentation probe epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"real samples not found at {REAL}")
    t0 = time.perf_counter()
    rows = run(args)
    models = sorted({r["model"] for r in rows}, key=lambda m: m != "random init")
    print(table(rows, models))
    print(f"\nencoder: {args.checkpoint or args.model + ' (random init only)'}; device {args.device}; "
          f"{time.perf_counter() - t0:.0f} s in all; mean ± spread over seeds {SEEDS} where shown")  # fmt: skip
    if not args.checkpoint:
        print("no --checkpoint given: the pretrained column needs an encoder exported by `terrafm pretrain` "
              "(or the published TerraFM-B.pth with --model terrafm_base); none ships with this repository.")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
