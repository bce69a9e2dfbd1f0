"""The paper's component-ablation table, reproduced on the built-in world (docs/design.md, "Objective").

Rows, each a pretraining run of the quickstart preset with components added one at a time:

1. DINO on S2-L2A only (no sensors as augmentation, no fusion, plain DINO centre);
2. + modality augmentation (each view one sensor drawn at random);
3. + fusion (views draw any subset of sensors; several are fused);
4. + dual centering (TerraFM: every component on; the quickstart's own run);

then, beyond the paper (:data:`EXTENSION_ROWS`), the TerraFM recipe plus each opt-in extension:
masked patch distillation (iBOT-style), the same with KoLeo, and per-view photometric jitter
(docs/pretraining.md).

Columns: kNN top-1 on ``landcover_cls`` with 100 % and 1 % of labels, the linear probe and the
segmentation-probe mIoU on ``landcover_seg``, all on S2 L2A input (the paper's columns are
m-BigEarthNet kNN F1, m-EuroSat kNN top-1 and m-Cashew UPerNet mIoU), plus the random-init
encoder as a floor. Finished runs in the output folder are reused, so after ``terrafm quickstart``
the last row costs nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from terrafm.config import PretrainConfig, apply_overrides, from_dict, to_dict
from terrafm.eval import load_task
from terrafm.models import load_model
from terrafm.outputs import atomic_write
from terrafm.quickstart.evaluate import evaluate_sensors
from terrafm.quickstart.pipeline import (
    StageClock,
    build_pretrain_config,
    build_world,
    random_encoder,
    run_pretraining,
    to_plain,
    variant_name,
)
from terrafm.quickstart.plots import plot_loss_curves
from terrafm.quickstart.presets import get_preset
from terrafm.quickstart.report import table_rows, write_json

__all__ = [
    "ABLATION_ROWS",
    "EXTENSION_ROWS",
    "PAPER_ROWS",
    "ablation_markdown",
    "run_ablation_table",
]

log = logging.getLogger(__name__)

# (row title, components switched off)
ABLATION_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DINO on S2-L2A only", ("modality_aug", "fusion", "dual_centering")),
    ("+ modality augmentation", ("fusion", "dual_centering")),
    ("+ fusion", ("dual_centering",)),
    ("+ dual centering (TerraFM)", ()),
)
# Beyond the paper: (row title, run folder, overrides on top of the full TerraFM recipe).
EXTENSION_ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "+ masked patch distillation",
        "full+masked_patch",
        ("loss.ibot.enabled=true",),
    ),
    (
        "+ masked patch distillation + KoLeo",
        "full+masked_patch+koleo",
        ("loss.ibot.enabled=true", "loss.koleo_weight=0.1"),
    ),
    (
        "+ photometric jitter",
        "full+photometric",
        ("data.photometric.prob=0.8",),
    ),
)
# The paper's numbers (docs/design.md, "Objective"): m-BigEarthNet kNN F1, m-EuroSat kNN top-1, m-Cashew mIoU.
PAPER_ROWS = (
    (54.62, 83.20, 50.58),
    (57.63, 87.70, 59.17),
    (57.74, 88.50, 62.40),
    (58.06, 90.40, 64.58),
)
SENSOR = ("s2_l2a",)


def run_ablation_table(
    out: str | Path = "runs/quickstart",
    *,
    seed: int = 0,
    preset: str = "quickstart",
    progress: bool = False,
) -> dict[str, Any]:
    """Pretrain and evaluate every row; write ``ablation.md``, ``ablation.json`` and the curves."""
    p = get_preset(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    curves = {}
    try:
        torch.set_num_threads(p.threads)
        with clock.stage("world"):
            build_world(out / "world", p, seed)
        cls_task = load_task("folder", "landcover_cls", out / "world" / "tasks")
        seg_task = load_task("folder", "landcover_seg", out / "world" / "tasks")
        cfg = None
        for title, off in ABLATION_ROWS:
            cfg = build_pretrain_config(
                p, out / "world", out / "pretrain" / variant_name(off), seed, off, progress
            )
            with clock.stage(f"pretrain {variant_name(off)}"):
                run = run_pretraining(cfg)
            torch.set_num_threads(p.threads)
            with clock.stage(f"evaluate {variant_name(off)}"):
                model = load_model(run.encoder)
                res = evaluate_sensors(model, cls_task, seg_task, SENSOR, p.probes, seed)
            curves[title] = run.metrics
            rows.append({"row": title, "ablate": list(off), "steps": run.steps,
                         "reused": run.reused, **res})  # fmt: skip
        for title, folder, overrides in EXTENSION_ROWS:
            base = build_pretrain_config(
                p, out / "world", out / "pretrain" / folder, seed, (), progress
            )
            ext = from_dict(PretrainConfig, apply_overrides(to_dict(base), overrides)).validate()
            with clock.stage(f"pretrain {folder}"):
                run = run_pretraining(ext)
            torch.set_num_threads(p.threads)
            with clock.stage(f"evaluate {folder}"):
                res = evaluate_sensors(load_model(run.encoder), cls_task, seg_task, SENSOR,
                                       p.probes, seed)  # fmt: skip
            curves[title] = run.metrics
            rows.append({"row": title, "ablate": [], "overrides": list(overrides),
                         "steps": run.steps, "reused": run.reused, **res})  # fmt: skip
        assert cfg is not None
        with clock.stage("evaluate random"):
            res = evaluate_sensors(random_encoder(cfg), cls_task, seg_task, SENSOR, p.probes, seed)
        rows.append({"row": "random init (floor)", "ablate": None, **res})
    finally:
        torch.set_num_threads(threads)
    plot_loss_curves(curves, out / "ablation_loss_curves.png")
    record = {"preset": p.name, "seed": seed, "sensors": list(SENSOR), "rows": rows,
              "probes": to_plain(p.probes), "timing": clock.summary()}  # fmt: skip
    write_json(out / "ablation.json", record)
    with atomic_write(out / "ablation.md") as tmp:
        tmp.write_text(ablation_markdown(record))
    return record


def ablation_markdown(record: dict[str, Any]) -> str:
    """The table of :func:`run_ablation_table` beside the paper's."""
    head = ["pretraining", "kNN top-1 100 %", "kNN top-1 1 %", "linear top-1", "mIoU",
            "paper: BEN kNN F1 / EuroSat kNN / Cashew mIoU"]  # fmt: skip
    body = []
    for i, r in enumerate(record["rows"]):
        paper = " / ".join(f"{v:.2f}" for v in PAPER_ROWS[i]) if i < len(PAPER_ROWS) else "—"
        body.append([r["row"], f"{r['knn_top1_full']:.1f}", f"{r['knn_top1_fraction']:.1f}",
                     f"{r['linear_top1']:.1f}", f"{r['miou']:.1f}", paper])  # fmt: skip
    t = record["timing"]
    lines = [
        "# Component ablation on the built-in world",
        "",
        f"Preset `{record['preset']}`, seed {record['seed']}, S2 L2A input; each row is its own "
        "pretraining run (`pretrain/<variant>/`). Tasks: `landcover_cls` (kNN, linear probe) and "
        "`landcover_seg` (segmentation probe), test split. The paper's columns are other "
        "benchmarks at full scale: compare the ordering, not the values. "
        + "".join(
            f"'{t}' is beyond the paper: the TerraFM recipe with `{' '.join(o)}`. "
            for t, _, o in EXTENSION_ROWS
        ),
        "",
        *table_rows([head, *body]),
        "",
        f"Total {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU "
        f"(load average {t['load_average_start']} at the start, {t['load_average_end']} at the end).",
        "",
        "![loss curves](ablation_loss_curves.png)",
        "",
    ]
    return "\n".join(lines)
