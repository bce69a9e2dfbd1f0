"""Run metrics: a JSON-lines log per step and the loss-curve plot (SPEC §4 pretraining runs).

Each line of ``metrics.jsonl`` is one logged step (``step``, ``epoch``, ``loss``, ``lr``, ``wd``,
``momentum``, ``teacher_temp``, ``teacher_entropy``, ``center_norm``, ``center_h_norm``,
``grad_norm``, ``images_per_s``, ``skipped``, ``nonfinite_total``). On resume, lines past the
checkpoint's step are dropped so the log matches the state that training continues from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from terrafm.outputs import atomic_write, output_error

__all__ = ["MetricsLog", "plot_loss_curve", "read_metrics"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics log (a torn last line, e.g. after a kill, is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf: keep them readable
    return v


class MetricsLog:
    """Append-only JSON-lines log.

    Args:
        path: the ``metrics.jsonl`` file.
        resume_step: when resuming, keep only records with ``step <= resume_step``.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
            with atomic_write(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._f = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            self._f.flush()
        except OSError as e:  # a file object's write errors do not name the file
            raise output_error(self.path, e) from e

    def close(self) -> None:
        self._f.close()


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot loss and teacher entropy against step; returns the PNG path (None if no data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in read_metrics(metrics_path) if isinstance(r.get("loss"), (int, float))]
    if not recs:
        return None
    steps = [r["step"] for r in recs]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [r["loss"] for r in recs], color="tab:blue", lw=1.2, label="DINO loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    ent = [
        (r["step"], r["teacher_entropy"])
        for r in recs
        if isinstance(r.get("teacher_entropy"), (int, float))
    ]
    if ent:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in ent], [e for _, e in ent], color="tab:orange", lw=1.0, alpha=0.8)
        ax2.set_ylabel("teacher entropy (nats)", color="tab:orange")
    ax.set_title("TerraFM pretraining")
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path
