"""``summary.json`` and ``report.md`` of a quickstart run.

The JSON holds every measured number (the headline keys at the top level, then all
results per encoder and sensor, timings with load averages, the resolved configs); the markdown
report shows the same numbers as tables beside the figures, and how to reproduce them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from terrafm.outputs import atomic_write

__all__ = ["markdown", "write_json", "write_outputs"]

_SENSOR_NAMES = {
    "s1": "S1",
    "s2_l2a": "S2 L2A",
    "s2_l1c": "S2 L1C",
    "s1+s2_l2a": "S1 + S2 L2A (fused)",
}


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (NaN/inf become strings)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return path


def _f(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "—"


def _delta(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return f"{a - b:+.1f}"
    return "—"


# (title, summary key without the encoder suffix, key of the raw-pixel control or None)
HEADLINE_ROWS = (
    ("kNN top-1, 1 % of labels, S2 L2A", "knn_top1", "knn_top1_pixels"),
    ("kNN top-1, 100 % of labels, S2 L2A", "knn_top1_full", "knn_top1_full_pixels"),
    ("linear probe top-1, S2 L2A", "linear_top1", "linear_top1_pixels"),
    ("segmentation probe mIoU, S2 L2A", "miou", "miou_pixels"),
    ("kNN top-1, 1 % of labels, S1", "knn_top1_s1", None),
    ("kNN top-1, 1 % of labels, S1 + S2 L2A fused", "knn_top1_fused", "knn_top1_fused_pixels"),
    ("kNN top-1, 100 % of labels, S1 + S2 L2A fused", "knn_top1_full_fused",
     "knn_top1_full_fused_pixels"),
    ("linear probe top-1, S1 + S2 L2A fused", "linear_top1_fused", "linear_top1_fused_pixels"),
    ("segmentation probe mIoU, S1 + S2 L2A fused", "miou_fused", "miou_fused_pixels"),
)  # fmt: skip
# (title, summary key without the encoder suffix, key of the chance level or None)
CROSS_ROWS = (
    ("retrieval recall@1, S1 query -> S2 L2A gallery", "retrieval_r1_s1_to_s2",
     "retrieval_chance_r1"),
    ("retrieval recall@5, S1 -> S2 L2A", "retrieval_r5_s1_to_s2", "retrieval_chance_r5"),
    ("retrieval recall@1, S2 L2A -> S1", "retrieval_r1_s2_to_s1", "retrieval_chance_r1"),
    ("retrieval recall@5, S2 L2A -> S1", "retrieval_r5_s2_to_s1", "retrieval_chance_r5"),
    ("kNN top-1, 100 %, trained fused, tested S2 L2A only", "knn_top1_full_fused_to_s2", None),
    ("kNN top-1, 1 %, trained fused, tested S2 L2A only", "knn_top1_fused_to_s2", None),
    ("kNN top-1, 100 %, trained fused, tested S1 only", "knn_top1_full_fused_to_s1", None),
    ("kNN top-1, 1 %, trained fused, tested S1 only", "knn_top1_fused_to_s1", None),
)  # fmt: skip
# A difference smaller than this (points) is reported as level: the test split moves single
# metrics by a few points between seeds (docs/quickstart.md).
LEVEL_POINTS = 1.0


def _headline_table(s: Mapping[str, Any]) -> list[str]:
    """Pretrained vs random init per metric, with the raw-pixel control beside them."""
    out = [
        "| metric | pretrained | random init | difference | raw pixels (control) |",
        "|---|---|---|---|---|",
    ]
    for title, key, control in HEADLINE_ROWS:
        a, b = s.get(f"{key}_pretrained"), s.get(f"{key}_random")
        if a is None and b is None:
            continue
        fa, fb = _f(a), _f(b)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            fa, fb = (f"**{fa}**", fb) if a >= b else (fa, f"**{fb}**")  # the better one
        px = _f(s.get(control)) if control else "—"
        out.append(f"| {title} | {fa} | {fb} | {_delta(a, b)} | {px} |")
    return out


def _controls_note(s: Mapping[str, Any]) -> list[str]:
    """What the controls column is, and the patch-majority ceiling."""
    if "miou_patch_majority" not in s and "knn_top1_pixels" not in s:
        return []
    return [
        "",
        "Controls: *raw pixels* runs the same protocols on the normalised input itself "
        "(`terrafm.eval.baselines.PixelEncoder`: CLS = per-band mean and standard deviation, "
        "patch tokens = the raw values of each 16 x 16 patch); the *patch-majority ceiling*, each "
        "16 x 16 block of the test masks painted with its majority class, is the best mIoU any "
        f"patch-level segmentation can reach: **{_f(s.get('miou_patch_majority'))}**."
        + (
            ""
            if "miou_pixels" in s
            else " The raw-pixel segmentation probe is not run by this preset (a linear map from "
            "each patch's raw values to its 16 x 16 class logits costs about ten CPU minutes "
            "per input); `benchmarks/quickstart_probe.py pixels` measures it."
        ),
    ]


def _cross_table(s: Mapping[str, Any]) -> list[str]:
    """Cross-sensor retrieval and missing-sensor kNN, pretrained vs random init."""
    if "retrieval_r1_s1_to_s2_pretrained" not in s:
        return []
    out = [
        "| metric (test split) | pretrained | random init | difference | chance |",
        "|---|---|---|---|---|",
    ]
    for title, key, chance in CROSS_ROWS:
        a, b = s.get(f"{key}_pretrained"), s.get(f"{key}_random")
        fa, fb = _f(a), _f(b)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            fa, fb = (f"**{fa}**", fb) if a >= b else (fa, f"**{fb}**")
        out.append(
            f"| {title} | {fa} | {fb} | {_delta(a, b)} | {_f(s.get(chance)) if chance else '—'} |"
        )
    n = s.get("cross_sensor", {}).get("pretrained", {}).get("retrieval", {}).get("n_gallery")
    out += [
        "",
        f"Retrieval: each test chip's S1 embedding (CLS) is the query, the S2 L2A embeddings of "
        f"all {n if n is not None else 'the'} test chips are the gallery; recall@k = share of "
        "queries whose own chip is among the k most similar (cosine; ties broken uniformly at "
        "random in expectation); chance = k / N. Missing sensor: the kNN's training set is the "
        "fused S1 + S2 L2A embeddings of the training split, its queries the test chips seen by "
        "one sensor only.",
    ]
    return out


def _verdict(s: Mapping[str, Any]) -> list[str]:
    """Every measured metric sorted into higher / level / lower than random init, and where the
    raw-pixel control beats both encoders."""
    groups: dict[str, list[str]] = {"higher": [], "level": [], "lower": []}
    beaten: list[str] = []
    pixels = {key: control for _, key, control in HEADLINE_ROWS if control}
    for title, key, _ in (*HEADLINE_ROWS, *CROSS_ROWS):
        a, b = s.get(f"{key}_pretrained"), s.get(f"{key}_random")
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            continue
        d = a - b
        side = "level" if abs(d) < LEVEL_POINTS else ("higher" if d > 0 else "lower")
        groups[side].append(f"{title} ({d:+.1f})")
        px = s.get(pixels[key]) if key in pixels else None
        if isinstance(px, (int, float)) and px > max(a, b):
            beaten.append(f"{title} ({_f(px)} against {_f(a)} / {_f(b)})")
    if not any(groups.values()):
        return []
    n = sum(len(g) for g in groups.values())
    out = [
        f"Of {n} measured metrics, pretraining is higher than random init of the same shape on "
        f"{len(groups['higher'])}, level (within {LEVEL_POINTS:g} point) on "
        f"{len(groups['level'])} and lower on {len(groups['lower'])}:",
        "",
    ]
    for side in ("higher", "level", "lower"):
        if groups[side]:
            out.append(f"- **{side}**: " + "; ".join(groups[side]) + ".")
    if beaten:
        out.append("- **raw pixels beat both encoders** (pixels against pretrained / random): "
                   + "; ".join(beaten) + ".")  # fmt: skip
    if groups["lower"]:
        out += [
            "",
            "Where pretraining is lower, read it with RankMe below. In the runs measured so far "
            "a random ViT at initialisation acts close to a random projection of the pixels, "
            "which a trained read-out (the linear and segmentation probes, kNN with all labels) "
            "can use in full, while DINO's CLS-only objective, in a run this short, puts the "
            "CLS embedding into a few directions and loses part of that detail "
            "(docs/quickstart.md, 'What pretraining buys here, and what it does not': the "
            "recipe variants tried, and a run four times as long).",
        ]
    return out


def _rank_note(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """RankMe of both encoders on S2 L2A: how many directions each representation uses."""
    pre, rnd = results.get("pretrained", {}).get("s2_l2a"), results.get("random", {}).get("s2_l2a")
    if not pre or not rnd or "rankme_cls" not in pre or "rankme_cls" not in rnd:
        return []
    return [
        "",
        f"RankMe (effective rank, S2 L2A test split, of {pre.get('dim', 'D')} dimensions): CLS "
        f"{_f(pre['rankme_cls'])} pretrained vs {_f(rnd['rankme_cls'])} random init; patch tokens "
        f"{_f(pre['rankme_patch'])} vs {_f(rnd['rankme_patch'])}. A pretrained representation "
        "that uses fewer directions than random init has partly collapsed: it can still group "
        "the classes better for few-label kNN while keeping less of the pixel detail that a "
        "linear or per-pixel probe can read (docs/quickstart.md).",
    ]


def _full_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    out = [
        "| encoder | sensors | kNN 1 % | kNN 100 % | linear | mIoU | RankMe CLS / patch | kNN 1 % draws |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for enc, per in results.items():
        for sensors, r in per.items():
            draws = ", ".join(_f(d) for d in r.get("knn_top1_fraction_draws", []))
            out.append(
                f"| {enc} | {_SENSOR_NAMES.get(sensors, sensors)} | {_f(r['knn_top1_fraction'])} | "
                f"{_f(r['knn_top1_full'])} | {_f(r['linear_top1'])} | {_f(r['miou'])} | "
                f"{_f(r.get('rankme_cls'))} / {_f(r.get('rankme_patch'))} | {draws} |"
            )
    return out


def _values(v: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {_f(x)}" for k, x in v.items())


def _acceptance(a: Mapping[str, Any]) -> list[str]:
    if "checks" not in a:  # a summary written before the per-check entries existed
        return [f"- [{'x' if ok else ' '}] {check}" for check, ok in a["passed"].items()]
    out = ["| check | values | threshold | result |", "|---|---|---|---|"]
    for c in a["checks"]:
        result = "pass" if c["passed"] else "**FAIL**"
        out.append(f"| {c['check']} | {_values(c['values'])} | {c['threshold']} | {result} |")
    passed = sum(c["passed"] for c in a["checks"])
    out.append(f"\n{passed} of {len(a['checks'])} checks pass.")
    if a.get("not_measured"):
        out += ["", "Not measured by this run:", *(f"- {m}" for m in a["not_measured"])]
    return out


def _timing(t: Mapping[str, Any]) -> list[str]:
    out = [
        "| stage | wall s | CPU s | load average (1, 5, 15 min) at its end |",
        "|---|---|---|---|",
    ]
    for name, st in t["stages"].items():
        load = st.get("load_average_end") or "n/a"
        out.append(f"| {name} | {_f(st['wall_seconds'])} | {_f(st['cpu_seconds'])} | {load} |")
    out.append(
        f"| **total** | **{_f(t['wall_seconds'])}** | {_f(t['cpu_seconds'])} | "
        f"{t.get('load_average_end') or 'n/a'} |"
    )
    out.append(
        f"\nLoad average at the start: {t.get('load_average_start') or 'n/a'}. CPU seconds "
        "count this process and its data workers; on a machine shared with other jobs the wall "
        "time is inflated roughly by the load average divided by the number of cores."
    )
    return out


def _figures(figs: Mapping[str, str]) -> list[str]:
    captions = {
        "loss_curves": "Pretraining: DINO loss, teacher entropy and learning rate per step.",
        "pretrained_vs_random": "Pretrained vs random-init encoder, per protocol and sensor input.",
        "pca_rgb": "Held-out test scenes: true colour, WorldCover, and the first three principal "
        "components of each encoder's patch tokens (S2 L2A input) as RGB.",
        "attention": "Last-block CLS attention per head (S2 L2A input), pretrained and random.",
    }
    out = []
    for name, path in figs.items():
        out += [f"### {captions.get(name, name)}", "", f"![{name}]({path})", ""]
    return out


def markdown(s: Mapping[str, Any], command: str | None = None) -> str:
    """The report as markdown (see the module docstring)."""
    pre, world = s["pretrain"], s["world"]
    ablated = ", ".join(s["ablate"]) or "none (every component on)"
    tasks = world["tasks"]
    cls, seg = tasks.get("landcover_cls", {}), tasks.get("landcover_seg", {})
    probes = s["probes"]
    lines = [
        "# TerraFM quickstart",
        "",
        f"Preset `{s['preset']}`, seed {s['seed']}, components switched off: {ablated}.",
        "",
        f"1. **World**: {world['pretrain_cells']} pretraining cells of "
        f"{world['config']['cell_size']} px (products {world['products']}), "
        f"{world['heldout_cells']} held-out cells cut into the tasks `landcover_cls` "
        f"({len(cls.get('classes', []))} classes, {cls.get('samples')}) and `landcover_seg` "
        f"({len(seg.get('classes', []))} classes, {seg.get('samples')}).",
        f"2. **Pretraining**: `{pre['model']}`, {pre['steps']} steps; DINO loss "
        f"{_f(pre['loss_first'], 3)} -> {_f(pre['loss_last'], 3)}, teacher entropy "
        f"{_f(pre['teacher_entropy_first'], 2)} -> {_f(pre['teacher_entropy_last'], 2)} nats"
        + (" (reused a finished run of the same config)." if pre["reused"] else "."),
        "3. **Evaluation** of the pretrained encoder and a random-init encoder of the same shape "
        "(the pretraining run's initial weights) on the held-out tasks, test split.",
        "",
        *(["## In short", "", *verdict, ""] if (verdict := _verdict(s)) else []),
        "## Headline",
        "",
        *_headline_table(s),
        *_controls_note(s),
        *_rank_note(s["results"]),
        "",
        "## Across sensors: retrieval and a missing sensor",
        "",
        *(_cross_table(s) or ["Not measured by this run."]),
        "",
        f"## Acceptance (issue {s['acceptance'].get('issue', 7)})",
        "",
        *_acceptance(s["acceptance"]),
        "",
        "## Every result",
        "",
        *_full_table(s["results"]),
        "",
        f"- kNN: cosine similarity, k = {probes['k']}, votes weighted by exp(sim / 0.07), on the "
        "CLS token (docs/design.md, 'Evaluation protocols / GEO-Bench v1').",
        f"- {probes['fraction']:.0%} of labels: per class, max(1, round({probes['fraction']:g} x "
        "n_class)) training samples, drawn with a seeded generator (stratified; every class keeps "
        f"at least one example). Mean over {probes['fraction_draws']} draws (seeds seed .. seed + "
        f"{probes['fraction_draws'] - 1}); every draw is listed.",
        f"- Linear probe: BatchNorm1d (no affine) + Linear on the CLS token, SGD lr 0.1, "
        f"one-cycle cosine, {probes['linear_epochs']} epochs, all training labels (docs/design.md, 'Evaluation protocols / Copernicus-Bench').",
        f"- Segmentation probe: a linear layer maps each patch token to 16 x 16 class logits, "
        f"AdamW lr {probes['seg_lr']:g}, {probes['seg_epochs']} epochs, whole chips (docs/design.md, 'Evaluation protocols / GEO-Bench v1'); "
        "mIoU over classes present in the test predictions or targets.",
        "",
        "## Figures",
        "",
        *_figures(s["figures"]),
        "## Time",
        "",
        *_timing(s["timing"]),
        "",
        "## Reproduce",
        "",
        "```",
        command
        or f"terrafm quickstart --preset {s['preset']} --seed {s['seed']}"
        + (f" --ablate {','.join(s['ablate'])}" if s["ablate"] else ""),
        "```",
        "",
        "Every number above is in `summary.json`; the resolved pretraining config is in "
        f"`{Path(pre['output_dir']).name}/config.yaml` under `pretrain/`.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.md`` into ``out``."""
    js = write_json(out / "summary.json", summary)
    md = out / "report.md"
    with atomic_write(md) as tmp:
        tmp.write_text(markdown(summary))
    return js, md


def table_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines from a header row and data rows."""
    head, *body = rows
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in body),
    ]
