"""Diagnose the early representation collapse of short pretraining runs (docs/pretraining.md).

Runs the first ``--steps`` steps of the quickstart's pretraining recipe (its schedules unchanged:
``train.max_steps`` stops early) for each named variant on the quickstart's world, logging the
collapse diagnostics every step (teacher entropy against log K, the entropy of the batch-mean
teacher distribution, KL(teacher || student), both centre norms) and RankMe of the teacher's and
student's CLS and patch tokens on a fixed probe batch every ``--rankme-every`` steps; then probes
the exported teacher on the quickstart's ``landcover_cls`` test split (S2 L2A: kNN top-1 with 1 %
of the labels, mean of 20 stratified draws, and with all labels; RankMe of the test CLS
embeddings), beside the random-init encoder of the same seed. Prints one table and writes
``diagnosis.json`` and ``diagnosis.png`` (RankMe, entropies and KL per variant) to ``--out``.

    .venv/bin/python benchmarks/collapse_diagnosis.py --out runs/diag \\
        --variants quickstart plain_dino_s2 --steps 96

A variant is a name of :data:`VARIANTS` (a list of ``key=value`` overrides of
``pretrain_quickstart``) or ``name:key=value,key=value`` for an ad-hoc one. Finished runs in
``--out`` are reused. The world is generated once (``--world``, default ``<out>/world``; the
quickstart preset and ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

PLAIN_S2 = ["data.modality_aug=false", "data.fusion=false", "loss.dual_centering=false"]
VARIANTS: dict[str, list[str]] = {
    "quickstart": [],
    "plain_dino_s2": PLAIN_S2,
    "freeze_last_layer_1ep": ["optim.freeze_last_layer_epochs=1"],
    "paper_opt": [  # DINO v1's optimiser and teacher schedules (the paper recipe's choices)
        "optim.lr=5e-4",
        "optim.momentum_teacher=0.996",
        "optim.weight_decay_end=0.4",
        "optim.freeze_last_layer_epochs=1",
        "model.drop_path_rate=0.1",
    ],
    "drop_path_0.1": ["model.drop_path_rate=0.1"],
    "masked_patch": ["loss.ibot.enabled=true"],
    "masked_patch_koleo": ["loss.ibot.enabled=true", "loss.koleo_weight=0.1"],
    "koleo": ["loss.koleo_weight=0.1"],
    "same_crop_pairs": ["loss.same_crop_pairs=true"],
}


def _variant(spec: str) -> tuple[str, list[str]]:
    from terrafm.config import ConfigError, parse_variant

    try:
        return parse_variant(spec, VARIANTS)
    except ConfigError as e:
        sys.exit(str(e))


def _probe(model: torch.nn.Module, task: Any, seed: int) -> dict[str, float]:
    from terrafm.eval import extract_features, knn_evaluate
    from terrafm.eval.metrics import rankme
    from terrafm.eval.subsets import fraction_indices

    kw: dict[str, Any] = {"batch_size": 64, "progress": False}
    train = extract_features(model, task.dataset("train", ("s2_l2a",)), **kw)
    test = extract_features(model, task.dataset("test", ("s2_l2a",)), **kw)
    x, y, xt = train.pooled("cls"), train.labels, test.pooled("cls")

    def knn(idx: list[int] | None = None) -> float:
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
        res = knn_evaluate(xs, ys, xt, test.labels, task.num_classes, ks=(20,))
        return float(res["knn20"])

    draws = [knn(list(fraction_indices(y, 0.01, seed + d))) for d in range(20)]
    return {
        "knn_1pct": sum(draws) / len(draws),
        "knn_full": knn(),
        "rankme_test_cls": rankme(xt.float()),
    }


def _at(recs: list[dict[str, Any]], key: str, step: int) -> float:
    vals = [r[key] for r in recs if r.get("step") == step and isinstance(r.get(key), (int, float))]
    return float(vals[0]) if vals else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/diag"))
    ap.add_argument("--world", type=Path, default=None)
    ap.add_argument("--variants", nargs="+", default=["quickstart", "plain_dino_s2"])
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--rankme-every", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-steps", type=int, nargs="+", default=[12, 48, 96])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from terrafm.config import PretrainConfig, load_config, shipped_config
    from terrafm.eval import load_task
    from terrafm.quickstart.pipeline import build_world, random_encoder, run_pretraining
    from terrafm.quickstart.presets import get_preset
    from terrafm.ssl.metrics import read_metrics

    torch.set_num_threads(1)
    world = args.world or args.out / "world"
    t0 = time.perf_counter()
    build_world(world, get_preset("quickstart"), args.seed)
    task = load_task("folder", "landcover_cls", world / "tasks")
    print(f"world ready in {time.perf_counter() - t0:.0f} s", flush=True)
    record_path = args.out / "diagnosis.json"
    record: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}
    rows = record.setdefault("variants", {})
    cfg = None
    for spec in args.variants:
        name, overrides = _variant(spec)
        cfg = load_config(
            PretrainConfig,
            shipped_config("pretrain_quickstart"),
            [
                *overrides,
                f"data.root={world}",
                f"train.output_dir={args.out / name}",
                f"train.max_steps={args.steps}",
                f"train.rankme_every={args.rankme_every}",
                f"train.seed={args.seed}",
                "train.log_every=1",
                "train.progress=false",
            ],
        )
        t = time.perf_counter()
        run = run_pretraining(cfg)
        secs = time.perf_counter() - t
        torch.set_num_threads(1)
        from terrafm.models import load_model

        probe = _probe(load_model(run.encoder), task, args.seed)
        recs = read_metrics(run.output_dir / "metrics.jsonl")
        rows[name] = {"overrides": overrides, "steps": run.steps, "seconds": secs, **probe,
                      "log_k": math.log(cfg.head.out_dim), "metrics": recs}  # fmt: skip
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record))
        print(f"{name}: {run.steps} steps in {secs:.0f} s; {probe}", flush=True)
    if cfg is not None and "random" not in record:
        record["random"] = _probe(random_encoder(cfg), task, args.seed)
        record_path.write_text(json.dumps(record))
    _table(record, args.report_steps)
    _plot(record, args.out / "diagnosis.png")


def _table(record: dict[str, Any], steps: list[int]) -> None:
    head = ["variant", "step", "H_t/logK", "H(mean P_t)", "KL", "|c|", "|c_h|",
            "RankMe CLS t/s", "RankMe patch t/s", "kNN 1%", "kNN 100%", "test RankMe"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    r0 = record.get("random")
    if r0:
        print(f"| random init | 0 | | | | | | | | {r0['knn_1pct']:.1f} | {r0['knn_full']:.1f} | "
              f"{r0['rankme_test_cls']:.1f} |")  # fmt: skip
    for name, row in record["variants"].items():
        recs = row["metrics"]
        for s in steps:
            if s > row["steps"]:
                continue
            last = s == min(row["steps"], steps[-1])
            probe = (f"{row['knn_1pct']:.1f} | {row['knn_full']:.1f} | {row['rankme_test_cls']:.1f}"
                     if last else " | | ")  # fmt: skip
            print(
                f"| {name} | {s} | {_at(recs, 'teacher_entropy', s) / row['log_k']:.2f} | "
                f"{_at(recs, 'teacher_batch_entropy', s):.2f} | {_at(recs, 'kl', s):.2f} | "
                f"{_at(recs, 'center_norm', s):.2f} | {_at(recs, 'center_h_norm', s):.2f} | "
                f"{_at(recs, 'rankme_cls_teacher', s):.1f} / {_at(recs, 'rankme_cls_student', s):.1f} | "
                f"{_at(recs, 'rankme_patch_teacher', s):.1f} / "
                f"{_at(recs, 'rankme_patch_student', s):.1f} | {probe} |"
            )


def _plot(record: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("rankme_cls_teacher", "RankMe teacher CLS (probe batch)"),
            ("rankme_patch_teacher", "RankMe teacher patches (probe batch)"),
            ("teacher_entropy", "teacher entropy / log K"),
            ("teacher_batch_entropy", "entropy of the batch-mean teacher distribution"),
            ("kl", "KL(teacher || student), CLS")]  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.8), dpi=100)
    for ax, (key, title) in zip(axes, keys):
        for name, row in record["variants"].items():
            pts = [
                (r["step"], r[key]) for r in row["metrics"] if isinstance(r.get(key), (int, float))
            ]
            if key == "teacher_entropy":
                pts = [(s, v / row["log_k"]) for s, v in pts]
            if pts:
                ax.plot(*zip(*pts), lw=1.2, label=name, marker="." if len(pts) < 20 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
