"""The quickstart's figures from its results, models and held-out scenes (see :mod:`.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from terrafm.quickstart.plots import (
    attention_maps,
    landcover_rgb,
    pca_rgb,
    plot_attention,
    plot_bars,
    plot_loss_curves,
    plot_pca,
    true_colour,
)
from terrafm.quickstart.presets import Preset
from terrafm.quickstart.scenes import Scene, heldout_scenes

__all__ = ["BAR_METRICS", "make_figures", "scene_features"]

BAR_METRICS = (
    ("knn_top1_fraction", "kNN top-1, 1 % labels"),
    ("knn_top1_full", "kNN top-1, 100 % labels"),
    ("linear_top1", "linear probe top-1"),
    ("miou", "segmentation probe mIoU"),
)
# Sensor input of the PCA and attention figures.
FIGURE_SENSOR = "s2_l2a"


@torch.inference_mode()
def scene_features(
    model: nn.Module, scenes: Sequence[Scene], sensor: str = FIGURE_SENSOR
) -> tuple[np.ndarray, np.ndarray]:
    """PCA-RGB (B, gh, gw, 3) of the patch tokens and last-block attention (B, heads, gh, gw)."""
    inputs = {sensor: torch.stack([s.inputs[sensor] for s in scenes])}  # (B, C, S, S)
    model.eval()
    feats = model.forward_features(inputs)  # type: ignore[operator]
    gh, gw = (int(v) for v in feats["grid"])
    pca = pca_rgb(feats["x_norm_patchtokens"].float(), (gh, gw))  # (B, gh, gw, 3)
    return pca, attention_maps(model, inputs)


def make_figures(
    out: Path,
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    models: Mapping[str, nn.Module],
    manifest: Mapping[str, Any],
    preset: Preset,
) -> dict[str, Path]:
    """Write every figure into ``out``; returns name -> path.

    Args:
        out: output folder.
        runs: pretraining run label -> metric records.
        results: encoder -> sensor label -> metrics (from :func:`.evaluate.evaluate_encoder`).
        models: encoder label -> encoder (``pretrained``, ``random``).
        manifest: the world's manifest (for the held-out scenes).
        preset: the quickstart preset.
    """
    figs = {
        "loss_curves": plot_loss_curves(runs, out / "loss_curves.png"),
        "pretrained_vs_random": plot_bars(results, BAR_METRICS, out / "pretrained_vs_random.png"),
    }
    scenes = heldout_scenes(manifest, preset.scenes)
    if not scenes:
        return figs
    panels = [
        {
            "rgb": true_colour(s.s2_dn, s.bands),
            "landcover": landcover_rgb(s.codes),
            "title": f"{s.name} ({s.target})",
        }
        for s in scenes
    ]
    pcas, attns = {}, {}
    for label, model in models.items():
        pcas[label], attns[label] = scene_features(model, scenes)
    figs["pca_rgb"] = plot_pca(panels, pcas, out / "pca_rgb.png")
    figs["attention"] = plot_attention(panels, attns, out / "attention.png")
    return figs
