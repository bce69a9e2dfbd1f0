"""Compare pretraining variants of the quickstart recipe on the *validation* split.

Choosing between recipes on the test split would tune on it; this script is how variants are
compared before the test split is read. Each variant is the quickstart's resolved pretraining
config (``pretrain_quickstart`` with the preset's overrides, the given seed) plus ``key=value``
overrides; it runs the full schedule on the quickstart world and probes the exported teacher with
the quickstart's own protocols (kNN with all and with 1 % of the labels, the linear probe, the
linear segmentation probe, cross-sensor retrieval and the missing-sensor kNN), except that the
held-out split is ``val``: the task folders are re-read with ``val`` in the place of ``test``.
The random-init encoder of the same seed is the reference row. ``--split test`` probes finished
runs on the test split instead, once, to report the variants chosen on ``val``.

    .venv/bin/python benchmarks/pretrain_variants.py --out runs/variants \\
        --variants recipe photometric masked_koleo earlier_recipe "mine:optim.lr=1e-3"

A variant is ``name`` (a name of :data:`VARIANTS`) or ``name:key=value,key=value``. The names
of :data:`PATCHED` are investigation switches no config has (``paper_sinkhorn``: Sinkhorn-Knopp
teacher targets); they run the shipped recipe with that piece of the step swapped. Finished runs
in ``--out`` are reused (same config and name); results go to ``<out>/variants.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

# The quickstart's earlier short-run optimiser and teacher, before the paper's became its default.
EARLIER = [
    "optim.lr=4e-3",
    "optim.momentum_teacher=0.95",
    "optim.weight_decay_end=0.1",
    "optim.freeze_last_layer_epochs=0",
    "model.drop_path_rate=0.0",
]
VARIANTS: dict[str, list[str]] = {
    "recipe": [],  # pretrain_quickstart as shipped: every component on, the paper's optimiser
    "photometric": ["data.photometric.prob=0.8"],
    "masked_patch": ["loss.ibot.enabled=true"],
    "masked_koleo": ["loss.ibot.enabled=true", "loss.koleo_weight=0.1"],
    "earlier_recipe": EARLIER,
    "earlier_photometric": [*EARLIER, "data.photometric.prob=0.8"],
    "earlier_koleo": [*EARLIER, "loss.koleo_weight=0.1"],
    "earlier_masked_koleo": [*EARLIER, "loss.ibot.enabled=true", "loss.koleo_weight=0.1"],
}
ROWS = [  # (key in the evaluation record, label)
    ("s2_l2a/knn_top1_fraction", "kNN 1 % S2"),
    ("s2_l2a/knn_top1_full", "kNN 100 % S2"),
    ("s2_l2a/linear_top1", "linear S2"),
    ("s2_l2a/miou", "seg mIoU S2"),
    ("s1+s2_l2a/knn_top1_fraction", "kNN 1 % fused"),
    ("s1+s2_l2a/knn_top1_full", "kNN 100 % fused"),
    ("s1+s2_l2a/linear_top1", "linear fused"),
    ("s1+s2_l2a/miou", "seg mIoU fused"),
    ("cross/retrieval_r1_s1_to_s2", "R@1 S1->S2"),
    ("cross/fused_to_s2_l2a_knn_fraction", "kNN 1 % fused -> S2"),
    ("s2_l2a/rankme_cls", "RankMe CLS S2"),
]


def sinkhorn_probs(teacher_logits: torch.Tensor, temp: float, iters: int = 3) -> torch.Tensor:
    """Teacher targets (N, K) whose columns are equalised over the N rows by Sinkhorn-Knopp.

    Each row sums to 1 and, after the last column step, every prototype carries ``N / K`` of the
    batch's mass: the batch is forced to spread over all prototypes, where centering only nudges it.
    """
    x = teacher_logits.float() / temp
    q = torch.exp(x - x.max()).t()  # (K, N)
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iters):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / n
    return (q * n).t()


# Investigation switches that no config has: variant name -> the rule that replaces the CLS
# teacher's dual-centred softmax, (teacher logits (N, K), temperature) -> targets (N, K), for the
# duration of the variant's pretraining (one process only). Its overrides are the recipe's, its
# folder its own name.
PATCHED: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "paper_sinkhorn": sinkhorn_probs,  # DINOv2's teacher
}
VARIANTS.update({name: [] for name in PATCHED})


@contextlib.contextmanager
def patched(name: str) -> Iterator[None]:
    """Apply the investigation switch of variant ``name`` (if any) while the block runs."""
    targets = PATCHED.get(name)
    if targets is None:
        yield
        return
    from terrafm.ssl import loss

    plain = loss._DualCentres.teacher_probs

    def teacher_probs(self: Any, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        if teacher_logits.dim() != 2:  # patch targets (masked patch distillation) unchanged
            return plain(self, teacher_logits, temp)
        return targets(teacher_logits, temp)

    loss._DualCentres.teacher_probs = teacher_probs  # type: ignore[method-assign]
    try:
        yield
    finally:
        loss._DualCentres.teacher_probs = plain  # type: ignore[method-assign]


def _variant(spec: str) -> tuple[str, list[str]]:
    from terrafm.config import ConfigError, parse_variant

    try:
        return parse_variant(spec, VARIANTS)
    except ConfigError as e:
        sys.exit(str(e))


def validation_tasks(world_tasks: Path, out: Path) -> Path:
    """Task folders whose ``test`` split is the original ``val`` split (the test split dropped).

    Sensor folders and ``task.json`` are symlinks; only ``samples.csv`` is rewritten.
    """
    for task in ("landcover_cls", "landcover_seg"):
        src, dst = world_tasks / task, out / task
        dst.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            link = dst / item.name
            if item.name != "samples.csv" and not link.exists():
                link.symlink_to(item.resolve())
        with open(src / "samples.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise SystemExit(f"{src / 'samples.csv'}: no samples")
        kept = []
        for r in rows:
            if r["split"] == "test":
                continue
            kept.append({**r, "split": "test" if r["split"] == "val" else r["split"]})
        with open(dst / "samples.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(kept)
    return out


def _flatten(res: dict[str, Any], cross: dict[str, Any]) -> dict[str, float]:
    flat = {f"{s}/{k}": v for s, r in res.items() for k, v in r.items() if isinstance(v, float)}
    for k, v in cross.items():
        if isinstance(v, (int, float)):
            flat[f"cross/{k}"] = float(v)
    return flat


def _evaluate(model: torch.nn.Module, tasks: Path, preset: Any, seed: int) -> dict[str, float]:
    from terrafm.eval import load_task
    from terrafm.eval.runner import Evaluator
    from terrafm.quickstart.evaluate import cross_sensor, evaluate_encoder, probe_settings
    from terrafm.quickstart.presets import SENSOR_SETS

    cls_task = load_task("folder", "landcover_cls", tasks)
    seg_task = load_task("folder", "landcover_seg", tasks)
    sets = [s for s in SENSOR_SETS if tuple(s) != ("s1",)]
    classifier = Evaluator(model, cls_task, probe_settings(preset.probes, seed))
    res = evaluate_encoder(model, cls_task, seg_task, sets, preset.probes, seed, classifier)
    return _flatten(res, _cross_flat(cross_sensor(classifier, preset.probes, seed)))


def spread(model: torch.nn.Module, tasks: Path) -> dict[str, float]:
    """How the backbone CLS spreads the training chips of ``landcover_cls`` (S2 L2A).

    ``mean_cos``: the mean cosine between two different chips; ``top5`` / ``top10``: the share of
    the centred features' variance in their 5 / 10 largest singular directions; ``rank``: RankMe
    of the centred features.
    """
    from terrafm.eval import load_task
    from terrafm.eval.features import extract_features
    from terrafm.eval.metrics import rankme

    ds = load_task("folder", "landcover_cls", tasks).dataset("train", ["s2_l2a"])
    f = extract_features(model, ds, progress=False).cls[0].double()
    n = f.shape[0]
    unit = torch.nn.functional.normalize(f, dim=1)
    mean_cos = (unit.sum(0).pow(2).sum() - n) / (n * (n - 1))  # off-diagonal mean of unit @ unit.T
    centred = f - f.mean(0)
    var = torch.linalg.svdvals(centred).pow(2)
    share = var.cumsum(0) / var.sum()
    return {
        "mean_cos": float(mean_cos),
        "top5": float(share[4]),
        "top10": float(share[9]),
        "rank": rankme(centred),
    }


def _cross_flat(cross: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f"retrieval_{k}": v for k, v in cross["retrieval"].items()}
    for name, r in cross["missing_sensor"].items():
        if isinstance(r, dict):
            out[f"fused_to_{name}_knn_full"] = r["knn_top1_full"]
            out[f"fused_to_{name}_knn_fraction"] = r["knn_top1_fraction"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/variants"))
    ap.add_argument("--world", type=Path, default=None, help="default: <out>/world")
    ap.add_argument("--variants", nargs="+", default=["recipe", "photometric"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="held-out split to probe on: compare and choose on val; read test once, to report "
        "the variants already chosen (results in variants_test.json)",
    )
    ap.add_argument(
        "--spread",
        action="store_true",
        help="train nothing: print how random init and the finished runs of --variants spread "
        "the training chips (mean cosine, variance in the top directions, centred rank)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from terrafm.config import PretrainConfig, apply_overrides, from_dict, to_dict
    from terrafm.models import load_model
    from terrafm.quickstart.pipeline import (
        build_pretrain_config,
        build_world,
        random_encoder,
        run_pretraining,
    )
    from terrafm.quickstart.presets import get_preset

    specs = [_variant(spec) for spec in args.variants]  # unknown names fail before any work
    preset = get_preset("quickstart")
    world = args.world or args.out / "world"
    build_world(world, preset, args.seed)
    if args.split == "val":
        tasks = validation_tasks(world / "tasks", args.out / "val_tasks")
        record_path = args.out / "variants.json"
    else:
        tasks, record_path = world / "tasks", args.out / "variants_test.json"
    if args.spread:
        base = build_pretrain_config(preset, world, args.out / "random", args.seed)
        torch.set_num_threads(1)
        encoders = {"random init": random_encoder(base)}
        for name, _ in specs:
            path = args.out / name / "encoder.safetensors"
            if not path.is_file():
                sys.exit(f"{path}: no finished run of variant {name!r}; run it without --spread")
            encoders[name] = load_model(path).eval()
        print("| encoder | mean cosine between chips | variance in top 5 / 10 | centred rank |")
        print("|---|---|---|---|")
        for name, model in encoders.items():
            r = spread(model, tasks)
            print(
                f"| {name} | {r['mean_cos']:.2f} | {100 * r['top5']:.1f} % / "
                f"{100 * r['top10']:.2f} % | {r['rank']:.1f} |"
            )
        return
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    rows = record.setdefault("variants", {})
    base = None
    for name, overrides in specs:
        base = build_pretrain_config(preset, world, args.out / name, args.seed)
        cfg = from_dict(PretrainConfig, apply_overrides(to_dict(base), overrides)).validate()
        t = time.perf_counter()
        with patched(name):
            run = run_pretraining(cfg)
        secs = time.perf_counter() - t
        torch.set_num_threads(1)
        probe = _evaluate(load_model(run.encoder), tasks, preset, args.seed)
        rows[name] = {"overrides": overrides, "steps": run.steps, "seconds": secs, **probe}
        record_path.write_text(json.dumps(record, indent=1))
        print(f"{name}: {run.steps} steps, {secs:.0f} s", flush=True)
    if base is not None and "random" not in record:
        record["random"] = _evaluate(random_encoder(base), tasks, preset, args.seed)
        record_path.write_text(json.dumps(record, indent=1))
    _table(record, args.split)


def _table(record: dict[str, Any], split: str = "val") -> None:
    cols = ["random", *record["variants"]]
    print(f"| {'validation' if split == 'val' else 'test'} split | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for key, label in ROWS:
        vals = [record.get("random", {}).get(key)] + [
            record["variants"][c].get(key) for c in cols[1:]
        ]
        cells = ["" if v is None else f"{v:.1f}" for v in vals]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
