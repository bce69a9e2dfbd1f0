"""Writing evaluation results: a JSON record and a markdown report beside the published numbers."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from terrafm.eval.published import published_for
from terrafm.outputs import atomic_write

__all__ = ["markdown_report", "write_report"]


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else str(v)


def _published_cell(r: Mapping[str, Any], metric: str) -> str:
    rows = [
        p
        for p in published_for(
            r["benchmark"], r["task"], r["protocol"], r["sensors"], r.get("partition")
        )
        if p.metric == metric
    ]
    return " · ".join(f"{p.model} {p.value:.1f}" for p in rows) or "—"


def _result_lines(r: Mapping[str, Any]) -> list[str]:
    head = f"| {r['benchmark']}/{r['task']} | {r['protocol']} | {'+'.join(r['sensors'])} | "
    if "error" in r:
        return [head + f"{r.get('partition', 'default')} | — | failed: {r['error']} | — |"]
    subset = r.get("train_subset", r.get("partition", "default"))
    lines = []
    metrics = r["metrics"]
    shown = [r["primary"]] + [m for m in ("iou_landslide",) if m in metrics]
    for m in shown:
        lines.append(head + f"{subset} | {m} | **{_fmt(metrics[m])}** | {_published_cell(r, m)} |")
    return lines


def markdown_report(
    results: Sequence[Mapping[str, Any]], title: str, model: Mapping[str, Any]
) -> str:
    """Markdown: a table of headline numbers beside published ones, then every metric per run."""
    out = [f"# {title}", ""]
    out += [f"- model: `{model.get('name')}`", f"- weights: {model.get('weights')}"]
    out += [f"- written: {datetime.datetime.now().isoformat(timespec='seconds')}", ""]
    out += ["| task | protocol | sensors | training labels | metric | this run | published |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        out += _result_lines(r)
    out += ["", "## All metrics", ""]
    for r in results:
        if "error" in r:
            continue
        name = f"{r['benchmark']}/{r['task']} · {r['protocol']} · {'+'.join(r['sensors'])} · {r.get('train_subset', 'default')}"
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in r["metrics"].items())
        out.append(f"- **{name}**: {metrics} (train {r.get('n_train')}, test {r.get('n_test')}, {r.get('seconds')} s"
                   + (f", {r['skipped']} unreadable samples skipped" if r.get("skipped") else "") + ")")  # fmt: skip
        for note in r.get("notes", []):
            out.append(f"  - {note}")
    out += ["", "Published numbers: docs/design.md, 'Evaluation protocols' (TerraFM, ICLR 2026, and the baselines it reports). They are "
            "for the published weights and full protocols; runs with other weights, fewer epochs or "
            "other sizes are not expected to match.", ""]  # fmt: skip
    return "\n".join(out)


def write_report(
    results: Sequence[Mapping[str, Any]], out_dir: str | Path, title: str, model: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``result.json`` and ``report.md`` into ``out_dir`` (atomically); returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "model": dict(model), "results": list(results),
              "written": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    json_path, md_path = out / "result.json", out / "report.md"
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    with atomic_write(md_path) as tmp:
        tmp.write_text(markdown_report(results, title, model))
    return json_path, md_path
