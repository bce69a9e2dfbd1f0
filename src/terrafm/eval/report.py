"""Writing evaluation results: a JSON record and a markdown report beside the published numbers.

Both take :class:`~terrafm.eval.results.EvalResult` objects (or their JSON records, read back with
:meth:`~terrafm.eval.results.EvalResult.from_dict`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from terrafm.eval.published import published_for
from terrafm.eval.results import EvalResult, as_result
from terrafm.outputs import atomic_write

__all__ = ["markdown_report", "write_report"]


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else str(v)


def _published_cell(r: EvalResult, metric: str) -> str:
    rows = [
        p
        for p in published_for(r.benchmark, r.task, r.protocol, r.sensors, r.partition)
        if p.metric == metric
    ]
    return " · ".join(f"{p.model} {p.value:.1f}" for p in rows) or "—"


def _result_lines(r: EvalResult) -> list[str]:
    head = f"| {r.benchmark}/{r.task} | {r.protocol} | {'+'.join(r.sensors)} | "
    if r.error is not None:
        return [head + f"{r.partition} | — | failed: {r.error} | — |"]
    lines = []
    shown = [r.primary] + [m for m in ("iou_landslide",) if m in r.metrics]
    for m in shown:
        cell = f"**{_fmt(r.metrics[m])}** | {_published_cell(r, m)} |"
        lines.append(head + f"{r.subset} | {m} | {cell}")
    return lines


def markdown_report(
    results: Sequence[EvalResult | Mapping[str, Any]], title: str, model: Mapping[str, Any]
) -> str:
    """Markdown: a table of headline numbers beside published ones, then every metric per run."""
    runs = [as_result(r) for r in results]
    out = [f"# {title}", ""]
    out += [f"- model: `{model.get('name')}`", f"- weights: {model.get('weights')}"]
    out += [f"- written: {datetime.datetime.now().isoformat(timespec='seconds')}", ""]
    out += ["| task | protocol | sensors | training labels | metric | this run | published |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        out += _result_lines(r)
    out += ["", "## All metrics", ""]
    for r in runs:
        if r.error is not None:
            continue
        name = f"{r.benchmark}/{r.task} · {r.protocol} · {'+'.join(r.sensors)} · {r.subset}"
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in r.metrics.items())
        out.append(f"- **{name}**: {metrics} (train {r.counts.train}, test {r.counts.test}, {r.seconds} s"
                   + (f", {r.skipped} unreadable samples skipped" if r.skipped else "") + ")")  # fmt: skip
        for note in r.notes:
            out.append(f"  - {note}")
    out += ["", "Published numbers: docs/design.md, 'Evaluation protocols' (TerraFM, ICLR 2026, and the baselines it reports). They are "
            "for the published weights and full protocols; runs with other weights, fewer epochs or "
            "other sizes are not expected to match.", ""]  # fmt: skip
    return "\n".join(out)


def write_report(
    results: Sequence[EvalResult | Mapping[str, Any]],
    out_dir: str | Path,
    title: str,
    model: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write ``result.json`` and ``report.md`` into ``out_dir`` (atomically); returns both paths.

    ``result.json`` holds ``title``, ``model``, ``written`` and ``results``: one
    :meth:`EvalResult.to_dict <terrafm.eval.results.EvalResult.to_dict>` record per run.
    """
    runs = [as_result(r) for r in results]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "model": dict(model), "results": [r.to_dict() for r in runs],
              "written": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    json_path, md_path = out / "result.json", out / "report.md"
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    with atomic_write(md_path) as tmp:
        tmp.write_text(markdown_report(runs, title, model))
    return json_path, md_path
