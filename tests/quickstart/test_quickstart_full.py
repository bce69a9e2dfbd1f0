"""The real default quickstart and its acceptance criteria (issue 7). Slow: about 15 minutes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from terrafm.quickstart.pipeline import run_quickstart


@pytest.mark.acceptance
def test_default_quickstart_meets_the_acceptance_criteria(tmp_path: Path) -> None:
    s = run_quickstart(tmp_path / "qs", seed=0)
    # Pretraining is worth it: +10 points kNN top-1 with 1 % of labels on S2, and a clear margin
    # in segmentation mIoU.
    assert s["knn_top1_pretrained"] - s["knn_top1_random"] >= 10.0, s["acceptance"]
    assert s["miou_pretrained"] - s["miou_random"] >= 3.0, s["acceptance"]
    # Fused S1 + S2 at least as good as the better single sensor.
    best_single = max(s["knn_top1_pretrained"], s["knn_top1_s1_pretrained"])
    assert s["knn_top1_fused_pretrained"] >= best_single, s["acceptance"]
    # 15 minutes on 2 cores. Wall time depends on what else runs on the machine, so the budget is
    # checked on the CPU seconds used (2 cores x 15 min), and on wall time when the load allows.
    assert s["timing"]["cpu_seconds"] <= 2 * 15 * 60, s["timing"]
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else 0.0
    if load <= (os.cpu_count() or 2):
        assert s["wall_seconds"] <= 15 * 60, s["timing"]
    for name in ("report.md", "summary.json", "pca_rgb.png", "attention.png"):
        assert (tmp_path / "qs" / name).stat().st_size > 1000
