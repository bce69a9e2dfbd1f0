"""Run metrics: a JSON-lines log per step and the loss-curve plot (docs/design.md, "Objective" pretraining runs).

Each line of ``metrics.jsonl`` is one logged step (``step``, ``epoch``, ``loss``, ``lr``, ``wd``,
``momentum``, ``teacher_temp``, ``teacher_entropy``, ``center_norm``, ``center_h_norm``,
``grad_norm``, ``images_per_s``, ``skipped``, ``nonfinite_total``, and the collapse diagnostics
``log_k``, ``teacher_batch_entropy``, ``kl``, with the opt-in extras ``cls_loss``, ``patch_loss``,
``patch_kl``, ``patch_teacher_entropy``, ``patch_center_norm``, ``patch_center_h_norm``,
``masked_patches``, ``koleo``, and every ``train.rankme_every`` steps ``rankme_{cls,patch}_{teacher,
student}``). On resume, lines past the checkpoint's step are dropped so the log matches the state
that training continues from. :func:`plot_diagnostics` draws them (``diagnostics.png``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from terrafm.outputs import atomic_write, output_error
from terrafm.ssl.heads import MultiCropModel, backbone_tokens
from terrafm.ssl.step import StepResult, to_device

__all__ = [
    "MetricsLog",
    "Progress",
    "RankMeProbe",
    "plot_diagnostics",
    "plot_loss_curve",
    "probe_rankme",
    "read_metrics",
    "step_record",
]

# StepResult fields of the opt-in extras, logged when the step computed them.
_EXTRA_KEYS = (
    "cls_loss",
    "patch_loss",
    "patch_kl",
    "patch_teacher_entropy",
    "patch_center_norm",
    "patch_center_h_norm",
    "masked_patches",
    "koleo",
)


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


def step_record(
    res: StepResult,
    hp: Mapping[str, float],
    *,
    step: int,
    epoch: int,
    out_dim: int,
    images_per_s: float,
    nonfinite_total: int,
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of one step (``step``: steps done, counting this one)."""
    rec: dict[str, Any] = {
        "step": step,
        "epoch": epoch,
        "loss": res.loss,
        **hp,
        "teacher_entropy": res.teacher_entropy,
        "log_k": math.log(out_dim),
        "teacher_batch_entropy": res.teacher_batch_entropy,
        "kl": res.kl,
        "center_norm": res.center_norm,
        "center_h_norm": res.center_h_norm,
        "h_count": res.h_count,
        "grad_norm": res.grad_norm,
        "images_per_s": images_per_s,
        "skipped": res.skipped,
        "nonfinite_total": nonfinite_total,
    }
    rec.update({k: getattr(res, k) for k in _EXTRA_KEYS if getattr(res, k) is not None})
    return rec


class Progress:
    """The progress bar of a run: steps, loss, a smoothed images/s and the skipped count."""

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True
        )
        self.rate: float | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def update(self, loss: float, images_per_s: float, skipped: int) -> None:
        r = self.rate
        self.rate = images_per_s if r is None else 0.9 * r + 0.1 * images_per_s
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{self.rate:.1f}", skipped=skipped)


class RankMeProbe:
    """RankMe of the teacher and the student every ``every`` steps (0: never) on a fixed probe:
    the first teacher view of the run's first batch. It does not touch the training state.

    Args:
        every: steps between probes (0: off).
        device: where the probe view is kept.
    """

    def __init__(self, every: int, device: torch.device):
        self.every = every
        self.device = device
        self.view: Any = None

    def keep(self, batch: Mapping[str, Any]) -> None:
        """Remember the probe view from the run's first batch."""
        if self.every and self.view is None:
            self.view = to_device(batch["teacher"][0], self.device)

    def due(self, step: int) -> bool:
        return bool(self.every) and self.view is not None and step % self.every == 0

    def measure(self, teacher: MultiCropModel, student: MultiCropModel) -> dict[str, float]:
        return probe_rankme({"teacher": teacher, "student": student}, self.view)


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


@torch.no_grad()
def probe_rankme(models: Mapping[str, MultiCropModel], view: Mapping[str, Any]) -> dict[str, float]:
    """RankMe of each model's backbone CLS embeddings and patch tokens on one view.

    Args:
        models: name -> a :class:`~terrafm.ssl.heads.MultiCropModel` (unwrapped).
        view: ``{"inputs": ..., "masks": ...}`` (a contract-B view, e.g. a fixed probe batch).

    Returns:
        ``rankme_cls_<name>`` and ``rankme_patch_<name>`` for each model. The backbones run in
        eval mode (no drop path, no random draw) and are put back in their previous mode.
    """
    from terrafm.eval.metrics import rankme

    out: dict[str, float] = {}
    for name, model in models.items():
        bb = model.backbone
        was = bb.training
        bb.eval()
        try:
            masks = {k: m.bool() for k, m in view["masks"].items()}
            tok = backbone_tokens(bb, view["inputs"], masks).float()  # (B, 1 + P, D)
        finally:
            bb.train(was)
        out[f"rankme_cls_{name}"] = rankme(tok[:, 0])
        out[f"rankme_patch_{name}"] = rankme(tok[:, 1:].reshape(-1, tok.shape[-1]))
    return out


def _series(recs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float))]
    pts = [(s, v) for s, v in pts if math.isfinite(v)]
    return [s for s, _ in pts], [v for _, v in pts]


def plot_diagnostics(
    metrics_path: str | Path, png_path: str | Path, title: str = ""
) -> Path | None:
    """Collapse diagnostics against step: losses, teacher entropies against log K, KL, centre
    norms and RankMe (what of them the log holds); returns the PNG path (None if no data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in read_metrics(metrics_path) if isinstance(r.get("loss"), (int, float))]
    if not recs:
        return None
    fig, axes = plt.subplots(1, 5, figsize=(22, 3.8), dpi=100)
    panels = [
        ("loss", [("loss", "total"), ("cls_loss", "CLS"), ("patch_loss", "patch"),
                  ("koleo", "KoLeo")]),
        ("entropy (nats)", [("teacher_entropy", "teacher (per sample)"),
                            ("teacher_batch_entropy", "teacher batch mean"),
                            ("patch_teacher_entropy", "teacher patches"), ("log_k", "log K")]),
        ("KL(teacher || student)", [("kl", "CLS"), ("patch_kl", "patch")]),
        ("centre norm", [("center_norm", "c"), ("center_h_norm", "c_h"),
                         ("patch_center_norm", "c_p"), ("patch_center_h_norm", "c_p,h")]),
        ("RankMe", [("rankme_cls_teacher", "CLS teacher"), ("rankme_patch_teacher", "patch teacher"),
                    ("rankme_cls_student", "CLS student"),
                    ("rankme_patch_student", "patch student")]),
    ]  # fmt: skip
    for ax, (label, keys) in zip(axes, panels):
        for key, name in keys:
            xs, ys = _series(recs, key)
            if xs:
                ax.plot(xs, ys, lw=1.2, marker="." if len(xs) < 30 else None, label=name)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path
