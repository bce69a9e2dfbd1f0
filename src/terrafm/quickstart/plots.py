"""The quickstart's figures: loss curves, pretrained-vs-random bars, PCA-RGB and attention maps.

Everything is drawn with matplotlib's Agg backend and written atomically. The feature figures
follow the DINO papers' habit: the first three principal components of the patch tokens of a few
scenes (fitted jointly over those scenes, so colours are comparable between them) shown as RGB,
and the last block's CLS-to-patch attention per head (``model.get_last_selfattention``), beside the
scene's true-colour image and its WorldCover map (docs/design.md, "Encoder and checkpoint layout" outputs, §5 classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from terrafm.outputs import atomic_write

__all__ = [
    "WORLDCOVER_PALETTE",
    "attention_maps",
    "landcover_rgb",
    "pca_rgb",
    "plot_attention",
    "plot_bars",
    "plot_loss_curves",
    "plot_pca",
    "true_colour",
]

# ESA WorldCover 2020/2021 legend colours (product user manual), code -> RGB hex.
WORLDCOVER_PALETTE: dict[int, str] = {
    10: "#006400", 20: "#ffbb22", 30: "#ffff4c", 40: "#f096ff", 50: "#fa0000", 60: "#b4b4b4",
    70: "#f0f0f0", 80: "#0064c8", 90: "#0096a0", 95: "#00cf75", 100: "#fae6a0",
}  # fmt: skip


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- arrays
def true_colour(s2_dn: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] from S2 DN (C, H, W): B04/B03/B02, 2-98 % stretch per image."""
    idx = [list(bands).index(b) for b in ("B04", "B03", "B02")]
    rgb = np.moveaxis(s2_dn[idx].astype(np.float64), 0, -1)  # (H, W, 3)
    lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1) ** (1 / 1.6)


def landcover_rgb(codes: np.ndarray) -> np.ndarray:
    """(H, W, 3) WorldCover colours of an ESA-code map (unknown codes black)."""
    out = np.zeros((*codes.shape, 3))
    for code, hexv in WORLDCOVER_PALETTE.items():
        rgb = [int(hexv[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        out[codes == code] = rgb
    return out


def pca_rgb(tokens: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """First three principal components of patch tokens as RGB.

    Args:
        tokens: (B, N, D) patch tokens of B images, N = gh * gw.
        grid: (gh, gw).

    Returns:
        (B, gh, gw, 3) in [0, 1]: components fitted over all B images jointly, each scaled by
        its 1-99 % range; signs fixed so the largest loading of each component is positive.
    """
    b, n, d = tokens.shape
    x = tokens.reshape(b * n, d).double()
    x = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # (D, D)
    comps = vh[:3]  # (3, D)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    proj = (x @ (comps * signs).T).numpy()  # (B*N, 3)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    proj = np.clip((proj - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    if proj.shape[1] < 3:  # fewer than three dimensions: pad with grey
        proj = np.concatenate([proj, np.full((proj.shape[0], 3 - proj.shape[1]), 0.5)], 1)
    return proj.reshape(b, grid[0], grid[1], 3)


@torch.inference_mode()
def attention_maps(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    """CLS-to-patch attention of the last block: (B, heads, gh, gw), each map summing to 1."""
    x = next(iter(inputs.values()))
    gh, gw = x.shape[-2] // 16, x.shape[-1] // 16
    attn = model.get_last_selfattention(dict(inputs))  # type: ignore[operator]  # (B, h, 1+N, 1+N)
    cls = attn[:, :, 0, 1:]  # (B, h, N)
    cls = cls / cls.sum(-1, keepdim=True)
    return cls.reshape(cls.shape[0], cls.shape[1], gh, gw).float().numpy()


# --------------------------------------------------------------------------- figures
def plot_loss_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Loss, teacher entropy and learning rate per step, one line per run.

    Args:
        runs: run label -> metric records (``step``, ``loss``, ``teacher_entropy``, ``lr``).
        path: PNG to write.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    panels = (("loss", "DINO loss"), ("teacher_entropy", "teacher entropy (nats)"), ("lr", "lr"))
    for ax, (key, title) in zip(axes, panels):
        for label, recs in runs.items():
            pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), lw=1.3, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.suptitle("Pretraining")
    fig.tight_layout()
    return _save(fig, path)


def plot_bars(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[tuple[str, str]],
    path: Path,
) -> Path:
    """Grouped bars, one panel per metric, one group per sensor choice, one bar per encoder.

    Args:
        results: encoder label -> sensor label -> metric key -> value (%).
        metrics: (metric key, panel title) pairs.
        path: PNG to write.
    """
    plt = _plt()
    encoders = list(results)
    sensor_sets = list(next(iter(results.values())))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.4 * len(metrics), 3.8), dpi=110, squeeze=False
    )
    width = 0.8 / len(encoders)
    colours = ["tab:green", "tab:gray", "tab:blue", "tab:orange", "tab:purple"]
    for ax, (key, title) in zip(axes[0], metrics):
        for j, enc in enumerate(encoders):
            vals = [results[enc][s].get(key, float("nan")) for s in sensor_sets]
            xs = np.arange(len(sensor_sets)) + (j - (len(encoders) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=enc, color=colours[j % len(colours)])
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(np.arange(len(sensor_sets)), [s.upper() for s in sensor_sets], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_pca(
    scenes: Sequence[Mapping[str, Any]], pcas: Mapping[str, np.ndarray], path: Path
) -> Path:
    """Per scene: true colour, WorldCover, then the PCA-RGB of each encoder's patch tokens.

    Args:
        scenes: dicts with ``rgb`` (H, W, 3), ``landcover`` (H, W, 3) and ``title``.
        pcas: encoder label -> (B, gh, gw, 3) from :func:`pca_rgb`.
        path: PNG to write.
    """
    plt = _plt()
    cols = 2 + len(pcas)
    fig, axes = plt.subplots(
        len(scenes), cols, figsize=(2.3 * cols, 2.3 * len(scenes)), dpi=110, squeeze=False
    )
    for i, sc in enumerate(scenes):
        panels = [(sc["rgb"], f"{sc['title']}\ntrue colour"), (sc["landcover"], "WorldCover")]
        panels += [(p[i], f"PCA · {label}") for label, p in pcas.items()]
        for ax, (img, title) in zip(axes[i], panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def plot_attention(
    scenes: Sequence[Mapping[str, Any]], maps: Mapping[str, np.ndarray], path: Path
) -> Path:
    """Per scene: true colour, then the last block's CLS attention of each head of each encoder.

    Args:
        scenes: dicts with ``rgb`` (H, W, 3) and ``title``.
        maps: encoder label -> (B, heads, gh, gw) from :func:`attention_maps`.
        path: PNG to write.
    """
    plt = _plt()
    heads = {label: m.shape[1] for label, m in maps.items()}
    cols = 1 + sum(heads.values())
    fig, axes = plt.subplots(
        len(scenes), cols, figsize=(2.0 * cols, 2.1 * len(scenes)), dpi=110, squeeze=False
    )
    for i, sc in enumerate(scenes):
        axes[i][0].imshow(sc["rgb"])
        axes[i][0].set_title(f"{sc['title']}\ntrue colour", fontsize=8)
        c = 1
        for label, m in maps.items():
            for h in range(heads[label]):
                ax = axes[i][c]
                ax.imshow(m[i, h], cmap="inferno", interpolation="nearest")
                ax.set_title(f"{label} · head {h + 1}", fontsize=8)
                c += 1
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)
