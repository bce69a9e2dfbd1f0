"""``terrafm quickstart``: the whole TerraFM pipeline end to end on the built-in world.

1. Generate the built-in multi-sensor world (Major-TOM layout) and its held-out tasks
   (:func:`terrafm.world.generate.make_world`).
2. Pretrain a small TerraFM with every component of docs/design.md, "Objective" on: sensors as augmentation, fusion,
   dual centering, land-cover-aware sampling, multi-crop (:func:`terrafm.ssl.train.pretrain`).
3. Evaluate the pretrained encoder and a random-init encoder of the same shape (the pretraining
   run's own initialisation: same seed, same code path) with kNN (100 % and 1 % of labels), a linear
   probe and a segmentation probe, on S1 alone, S2 alone and S1+S2 fused; then across sensors
   (S1 -> S2 retrieval of the same chip, kNN trained on fused features and tested on one sensor),
   beside the controls (raw pixels, the patch-majority ceiling) (:mod:`terrafm.quickstart.evaluate`).
4. Write ``summary.json``, ``report.md`` and the figures into the output folder.

Everything is seeded by one ``seed`` (world, pretraining, probes), so a run is reproducible. A
rerun into the same folder reuses what is complete: the world (same config), a finished
pretraining run (same resolved config; an interrupted one is resumed exactly).
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

import terrafm
from terrafm.config import PretrainConfig, ablation_overrides, config_diff, load_config, to_dict
from terrafm.config import shipped_config as shipped_pretrain_config
from terrafm.eval import load_task
from terrafm.eval.runner import Evaluator
from terrafm.models import create_model, load_model
from terrafm.quickstart.evaluate import (
    cross_sensor,
    evaluate_controls,
    evaluate_encoder,
    probe_settings,
    sensor_label,
)
from terrafm.quickstart.presets import SENSOR_SETS, Preset, get_preset
from terrafm.ssl.metrics import read_metrics
from terrafm.world.generate import load_manifest, make_world, world_config

__all__ = [
    "COMPONENTS",
    "PretrainRun",
    "StageClock",
    "build_pretrain_config",
    "build_world",
    "random_encoder",
    "run_pretraining",
    "run_quickstart",
    "variant_name",
]

log = logging.getLogger(__name__)

# The switchable components (docs/design.md, "Objective"); land-cover-aware sampling and multi-crop stay on.
COMPONENTS = ("modality_aug", "fusion", "dual_centering")


# --------------------------------------------------------------------------- timing
def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


@dataclass
class StageClock:
    """Wall and CPU seconds per stage, with the load average when each stage ended.

    The machine may be shared: the load average says how far wall time is inflated.
    """

    t0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=_cpu_seconds)
    load_start: list[float] | None = field(default_factory=_loadavg)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        w, c = time.perf_counter(), _cpu_seconds()
        log.info("quickstart: %s ...", name)
        yield
        self.stages[name] = {
            "wall_seconds": round(time.perf_counter() - w, 2),
            "cpu_seconds": round(_cpu_seconds() - c, 2),
            "load_average_end": _loadavg(),
        }
        log.info("quickstart: %s done in %.1f s", name, self.stages[name]["wall_seconds"])

    def summary(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(time.perf_counter() - self.t0, 2),
            "cpu_seconds": round(_cpu_seconds() - self.cpu0, 2),
            "load_average_start": self.load_start,
            "load_average_end": _loadavg(),
            "stages": self.stages,
        }


# --------------------------------------------------------------------------- pretraining
def variant_name(ablate: Sequence[str]) -> str:
    """Folder name of a pretraining variant: ``full`` or ``no_<component>+...``."""
    off = sorted(set(ablate))
    return "full" if not off else "no_" + "+".join(off)


def check_ablate(ablate: Sequence[str]) -> list[str]:
    """Validated, de-duplicated component names (in :data:`COMPONENTS` order)."""
    bad = sorted(set(ablate) - set(COMPONENTS))
    if bad:
        raise ValueError(f"unknown component(s) {bad} to ablate; choose from {list(COMPONENTS)}")
    return [c for c in COMPONENTS if c in set(ablate)]


def build_pretrain_config(
    preset: Preset,
    world: Path,
    out_dir: Path,
    seed: int,
    ablate: Sequence[str] = (),
    progress: bool = False,
) -> PretrainConfig:
    """The resolved pretraining config of a preset, with the listed components switched off."""
    overrides = [*preset.pretrain_overrides, *ablation_overrides(check_ablate(ablate))]
    cfg = load_config(PretrainConfig, shipped_pretrain_config(preset.pretrain_config), overrides)
    cfg.data.root = str(world)
    cfg.train.output_dir = str(out_dir)
    cfg.train.seed = seed
    cfg.train.progress = progress
    return cfg.validate()


@dataclass
class PretrainRun:
    """A finished pretraining run."""

    output_dir: Path
    encoder: Path
    metrics: list[dict[str, Any]]
    steps: int
    reused: bool


def _same_config(saved: Path, cfg: PretrainConfig) -> bool:
    from terrafm.ssl.train import RESUMABLE_CHANGES

    try:
        old = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(old, dict):
        return False
    return not [k for k in config_diff(old, to_dict(cfg)) if k not in RESUMABLE_CHANGES]


def run_pretraining(cfg: PretrainConfig) -> PretrainRun:
    """Pretrain as configured, reusing a finished run of the same config in its folder.

    A run of the same config that was interrupted is resumed exactly; a folder holding a run of
    another config is replaced (it belongs to the quickstart's own output tree).
    """
    from terrafm.ssl.train import pretrain

    out = Path(cfg.train.output_dir)
    encoder, ckpt, saved = out / "encoder.safetensors", out / "checkpoint.pt", out / "config.yaml"
    same = saved.is_file() and _same_config(saved, cfg)
    if same and encoder.is_file():
        log.info("reusing the finished pretraining run in %s (same config)", out)
        recs = read_metrics(out / "metrics.jsonl")
        return PretrainRun(out, encoder, recs, int(recs[-1]["step"]) if recs else 0, True)
    if out.exists() and not same:
        log.warning("replacing %s: it holds a pretraining run of another config", out)
        shutil.rmtree(out)
    result = pretrain(cfg, resume=same and ckpt.is_file())
    if result.encoder is None:
        raise RuntimeError(
            f"pretraining in {out} stopped ({result.stopped}) at step {result.step} before the "
            "end; rerun the same command to resume it"
        )
    return PretrainRun(out, result.encoder, read_metrics(result.metrics), result.step, False)


def random_encoder(cfg: PretrainConfig) -> torch.nn.Module:
    """An encoder of the same shape, initialised exactly as the pretraining run started."""
    # Pretraining seeds every generator with train.seed right before create_model, which draws
    # from torch's generator only: the same seed gives the same initial weights.
    torch.manual_seed(cfg.train.seed)
    return create_model(cfg.model.name, drop_path_rate=cfg.model.drop_path_rate).eval()


# --------------------------------------------------------------------------- the pipeline
def build_world(out: Path, preset: Preset, seed: int) -> dict[str, Any]:
    """Generate (or reuse, same config) the preset's world in ``out``; returns its manifest."""
    cfg = world_config(preset.world_preset, seed=seed, **dict(preset.world_overrides))
    existing = load_manifest(out) if out.is_dir() else None
    # A world of another config (another seed or preset) in our own folder is replaced.
    other = existing is not None and existing.get("config") != cfg.to_dict()
    return make_world(out, cfg, overwrite=other)


def _summarise_run(run: PretrainRun) -> dict[str, Any]:
    first, last = (run.metrics[0], run.metrics[-1]) if run.metrics else ({}, {})
    return {
        "steps": run.steps,
        "reused": run.reused,
        "output_dir": str(run.output_dir),
        "encoder": str(run.encoder),
        "loss_first": first.get("loss"),
        "loss_last": last.get("loss"),
        "teacher_entropy_first": first.get("teacher_entropy"),
        "teacher_entropy_last": last.get("teacher_entropy"),
    }


ENCODERS = ("pretrained", "random")


def headline(
    results: dict[str, dict[str, dict[str, Any]]],
    cross: dict[str, dict[str, Any]] | None = None,
    controls: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The summary's named figures from the per-encoder, per-sensor results.

    ``cross`` (encoder -> :func:`~terrafm.quickstart.evaluate.cross_sensor` record) adds the
    retrieval and missing-sensor keys; ``controls`` (:func:`evaluate_controls`) the raw-pixel and
    patch-majority keys.
    """
    s1, s2, fused = (sensor_label(s) for s in SENSOR_SETS)
    out: dict[str, float] = {}
    for enc in ENCODERS:
        r = results[enc]
        out[f"knn_top1_{enc}"] = r[s2]["knn_top1_fraction"]
        out[f"knn_top1_full_{enc}"] = r[s2]["knn_top1_full"]
        out[f"linear_top1_{enc}"] = r[s2]["linear_top1"]
        out[f"miou_{enc}"] = r[s2]["miou"]
        out[f"knn_top1_s1_{enc}"] = r[s1]["knn_top1_fraction"]
        out[f"knn_top1_fused_{enc}"] = r[fused]["knn_top1_fraction"]
        out[f"knn_top1_full_fused_{enc}"] = r[fused]["knn_top1_full"]
        out[f"linear_top1_fused_{enc}"] = r[fused]["linear_top1"]
        out[f"miou_fused_{enc}"] = r[fused]["miou"]
    for enc, c in (cross or {}).items():
        ret = c["retrieval"]
        for k in (1, 5):
            for a, b in (("s1", "s2"), ("s2", "s1")):
                out[f"retrieval_r{k}_{a}_to_{b}_{enc}"] = ret[f"r{k}_{a}_to_{b}"]
            out[f"retrieval_chance_r{k}"] = ret[f"chance_r{k}"]
        for name, short in ((s2, "s2"), (s1, "s1")):
            m = c["missing_sensor"][name]
            out[f"knn_top1_fused_to_{short}_{enc}"] = m["knn_top1_fraction"]
            out[f"knn_top1_full_fused_to_{short}_{enc}"] = m["knn_top1_full"]
    if controls:
        for name, suffix in ((s2, ""), (fused, "_fused")):
            px = controls["pixels"].get(name)
            if px is None:
                continue
            out[f"knn_top1{suffix}_pixels"] = px["knn_top1_fraction"]
            out[f"knn_top1_full{suffix}_pixels"] = px["knn_top1_full"]
            out[f"linear_top1{suffix}_pixels"] = px["linear_top1"]
            if "miou" in px:
                out[f"miou{suffix}_pixels"] = px["miou"]
        out["miou_patch_majority"] = controls["patch_majority"]["miou"]
    return {k: round(v, 2) for k, v in out.items()}


# Acceptance thresholds of the main job (docs/quickstart.md, the acceptance block).
KNN_MIN_GAIN = 10.0  # kNN top-1 with 1 % of the labels: at least this many points over random
RETRIEVAL_MIN_RATIO = 5.0  # recall@1 S1 -> S2: at least this many times the random encoder's
TIME_BUDGET_S = 15 * 60
# Acceptance checks one quickstart run cannot make.
NOT_MEASURED_HERE = (
    "segmentation mIoU with UPerNet on four blocks (not run by the quickstart: its training costs "
    "about 0.24 CPU s per chip and epoch here, some 4 CPU hours for 616 chips x 50 epochs x 2 "
    "encoders; benchmarks/quickstart_eval.py --upernet-chips; terrafm eval --protocol "
    "seg-upernet runs it)",
    "the same checks for seeds 1 and 2 (run terrafm quickstart --seed 1 / --seed 2)",
    "the ablation table's ordering on few-label kNN (terrafm quickstart --ablation-table)",
)
# Kept for reading older summaries: the mIoU margin an earlier acceptance asked for.
MIOU_MIN_GAIN = 3.0


def _check(name: str, values: dict[str, float], threshold: str, passed: bool) -> dict[str, Any]:
    return {"check": name, "values": values, "threshold": threshold, "passed": bool(passed)}


def _gain_check(h: dict[str, float], key: str, what: str, min_gain: float | None) -> dict[str, Any]:
    a, b = h[f"{key}_pretrained"], h[f"{key}_random"]
    values = {"pretrained": a, "random": b, "gain": round(a - b, 2)}
    if min_gain is None:
        return _check(f"{what}: pretrained > random init", values, "gain > 0", a > b)
    return _check(
        f"{what}: pretrained >= random init + {min_gain:g}",
        values,
        f"gain >= {min_gain:g}",
        a - b >= min_gain,
    )


def acceptance(h: dict[str, float], wall: float) -> dict[str, Any]:
    """The quickstart's acceptance checks on measured numbers (nothing here is tuned to pass).

    One entry per check in ``checks`` (values, threshold, pass/fail); ``passed`` maps each check's
    name to its outcome. A check whose numbers were not measured (a key missing from ``h``) is
    left out and named in ``not_measured``.
    """
    checks: list[dict[str, Any]] = []
    not_measured: list[str] = []
    wanted = [
        ("knn_top1", "kNN top-1, 1 % of labels, S2 L2A", KNN_MIN_GAIN),
        ("knn_top1_fused", "kNN top-1, 1 % of labels, S1 + S2 L2A fused", KNN_MIN_GAIN),
        ("knn_top1_full", "kNN top-1, 100 % of labels, S2 L2A", None),
        ("knn_top1_full_fused", "kNN top-1, 100 % of labels, S1 + S2 L2A fused", None),
        ("linear_top1", "linear probe top-1, S2 L2A", None),
        ("linear_top1_fused", "linear probe top-1, S1 + S2 L2A fused", None),
    ]
    for key, what, gain in wanted:
        if f"{key}_pretrained" in h and f"{key}_random" in h:
            checks.append(_gain_check(h, key, what, gain))
        else:
            not_measured.append(what)
    for key, what in (("miou", "S2 L2A"), ("miou_fused", "S1 + S2 L2A fused")):
        name = f"segmentation mIoU (linear patch probe), {what}"
        if f"{key}_pretrained" not in h:
            not_measured.append(name)
            continue
        c = _gain_check(h, key, name, None)
        # Segmentation may be met by the "+ masked patch distillation" encoder when it is measured.
        masked = h.get(key.replace("miou", "miou_masked", 1) + "_pretrained")
        if masked is not None:
            c["values"]["masked_pretrained"] = masked
            c["check"] += " (or the masked-patch-distillation encoder)"
            c["passed"] = c["passed"] or masked > c["values"]["random"]
        checks.append(c)
    if "retrieval_r1_s1_to_s2_pretrained" in h:
        a, b = h["retrieval_r1_s1_to_s2_pretrained"], h["retrieval_r1_s1_to_s2_random"]
        checks.append(
            _check(
                f"cross-sensor retrieval recall@1, S1 -> S2 L2A: pretrained >= "
                f"{RETRIEVAL_MIN_RATIO:g} x random init",
                {
                    "pretrained": a,
                    "random": b,
                    "ratio": round(a / b, 2) if b > 0 else float("inf"),
                    "chance": h.get("retrieval_chance_r1", float("nan")),
                },
                f"ratio >= {RETRIEVAL_MIN_RATIO:g}",
                a >= RETRIEVAL_MIN_RATIO * b and a > 0,
            )
        )
    else:
        not_measured.append("cross-sensor retrieval recall@1, S1 -> S2 L2A")
    checks.append(
        _check(
            f"wall time <= {TIME_BUDGET_S} s",
            {"wall_seconds": round(wall, 1)},
            f"<= {TIME_BUDGET_S}",
            wall <= TIME_BUDGET_S,
        )
    )
    best_single = max(h["knn_top1_pretrained"], h["knn_top1_s1_pretrained"])
    out: dict[str, Any] = {
        "issue": 14,
        # the gains of the earlier acceptance, kept for comparison with older runs
        "knn_gain_1pct": round(h["knn_top1_pretrained"] - h["knn_top1_random"], 2),
        "miou_gain": round(h["miou_pretrained"] - h["miou_random"], 2),
        "fused_minus_best_single": round(h["knn_top1_fused_pretrained"] - best_single, 2),
        "wall_seconds": round(wall, 1),
        "checks": checks,
        "passed": {c["check"]: c["passed"] for c in checks},
        "not_measured": [*not_measured, *NOT_MEASURED_HERE],
    }
    out["all_passed"] = all(c["passed"] for c in checks)
    return out


def run_quickstart(
    out: str | Path = "runs/quickstart",
    *,
    seed: int = 0,
    preset: str = "quickstart",
    ablate: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline (module docstring) and return the summary written to ``out``.

    Args:
        out: output folder (``world/``, ``pretrain/<variant>/``, ``summary.json``, ``report.md``,
            figures).
        seed: seeds the world, pretraining and probes.
        preset: a name of :data:`terrafm.quickstart.presets.PRESETS`.
        ablate: components switched off in pretraining (of :data:`COMPONENTS`).
        progress: show progress bars.
    """
    from terrafm.quickstart.figures import make_figures
    from terrafm.quickstart.report import write_outputs

    p = get_preset(preset)
    ablate = check_ablate(ablate)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    threads = torch.get_num_threads()
    torch.set_num_threads(p.threads)
    try:
        with clock.stage("world"):
            manifest = build_world(out / "world", p, seed)
        cfg = build_pretrain_config(
            p, out / "world", out / "pretrain" / variant_name(ablate), seed, ablate, progress
        )
        with clock.stage("pretrain"):
            run = run_pretraining(cfg)
        torch.set_num_threads(p.threads)  # pretraining sets its own thread count
        cross: dict[str, dict[str, Any]] = {}
        with clock.stage("evaluate"):
            results = evaluate_models(out / "world", cfg, run, p, seed, cross)
        controls = None
        if p.controls:
            with clock.stage("controls"):
                controls = evaluate_models_controls(out / "world", p, seed)
        with clock.stage("figures"):
            models = {"pretrained": load_model(run.encoder).eval(), "random": random_encoder(cfg)}
            figures = make_figures(out, {"pretrained": run.metrics}, results, models, manifest, p)
    finally:
        torch.set_num_threads(threads)
    h = headline(results, cross, controls)
    timing = clock.summary()
    summary: dict[str, Any] = {
        **h,
        "wall_seconds": timing["wall_seconds"],
        "seed": seed,
        "preset": p.name,
        "ablate": list(ablate),
        "acceptance": acceptance(h, timing["wall_seconds"]),
        "results": results,
        "cross_sensor": cross,
        "controls": controls,
        "timing": timing,
        "pretrain": {**_summarise_run(run), "model": cfg.model.name, "config": to_dict(cfg)},
        "world": _world_summary(manifest),
        "probes": to_plain(p.probes),
        "figures": {k: str(v.relative_to(out)) for k, v in figures.items()},
        "environment": _environment(p.threads),
    }
    write_outputs(out, summary)
    return summary


def evaluate_models(
    world: Path,
    cfg: PretrainConfig,
    run: PretrainRun,
    p: Preset,
    seed: int,
    cross: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """kNN / linear / segmentation results of the pretrained and random encoders.

    ``cross``, when given, receives per encoder the cross-sensor retrieval and missing-sensor
    results (:func:`~terrafm.quickstart.evaluate.cross_sensor`), from the same features.
    """
    cls_task = load_task("folder", "landcover_cls", world / "tasks")
    seg_task = load_task("folder", "landcover_seg", world / "tasks")
    out = {}
    for name, model in (("pretrained", load_model(run.encoder)), ("random", random_encoder(cfg))):
        log.info("quickstart: evaluating the %s encoder", name)
        # one evaluator per encoder: the classification features serve every protocol below
        classifier = Evaluator(model, cls_task, probe_settings(p.probes, seed))
        out[name] = evaluate_encoder(
            model, cls_task, seg_task, SENSOR_SETS, p.probes, seed, classifier
        )
        if cross is not None:
            cross[name] = cross_sensor(classifier, p.probes, seed)
    return out


def evaluate_models_controls(world: Path, p: Preset, seed: int) -> dict[str, Any]:
    """Raw-pixel probes and the patch-majority ceiling on the quickstart's tasks."""
    cls_task = load_task("folder", "landcover_cls", world / "tasks")
    seg_task = load_task("folder", "landcover_seg", world / "tasks")
    sets = [s for s in SENSOR_SETS if sensor_label(s) in p.control_sensors]
    seg_sets = [s for s in sets if sensor_label(s) in p.control_seg_sensors]
    return evaluate_controls(cls_task, seg_task, sets, p.probes, seed, seg_sets)


def to_plain(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict."""
    import dataclasses

    return dataclasses.asdict(obj)


def _world_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": manifest["config"],
        "products": manifest["products"],
        "pretrain_cells": len(manifest["pretrain_cells"]),
        "heldout_cells": len(manifest["heldout_cells"]),
        "tasks": {
            name: {"task": t["task"], "classes": t["classes"], "samples": t["samples"]}
            for name, t in manifest["tasks"].items()
        },
    }


def _environment(threads: int) -> dict[str, Any]:
    return {
        "terrafm": terrafm.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "eval_threads": threads,
        "machine": platform.machine(),
    }
