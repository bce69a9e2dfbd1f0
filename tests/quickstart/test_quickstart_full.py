"""The real default quickstart and its acceptance criteria. Slow: about 15 minutes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from terrafm.quickstart.pipeline import run_quickstart


@pytest.mark.acceptance
def test_default_quickstart_meets_the_acceptance_criteria(tmp_path: Path) -> None:
    s = run_quickstart(tmp_path / "qs", seed=0)
    a = s["acceptance"]
    # Every measured check of the summary's acceptance block except wall time (below): kNN 1 %
    # >= +10 on S2 L2A and fused input, kNN 100 % and linear probe higher than random init,
    # segmentation mIoU higher, cross-sensor retrieval recall@1 S1 -> S2 >= 5 x random init.
    failed = [c for c in a["checks"] if not c["passed"] and not c["check"].startswith("wall")]
    assert not failed, failed
    assert len(a["checks"]) == 10, a["not_measured"]
    # Recomputed from the headline keys, independently of the acceptance code.
    assert s["knn_top1_pretrained"] - s["knn_top1_random"] >= 10.0
    assert s["knn_top1_fused_pretrained"] - s["knn_top1_fused_random"] >= 10.0
    assert s["retrieval_r1_s1_to_s2_pretrained"] >= 5 * s["retrieval_r1_s1_to_s2_random"]
    # 15 minutes on 2 cores. Wall time depends on what else runs on the machine, so the budget is
    # checked on the CPU seconds used (2 cores x 15 min), and on wall time when the load allows.
    assert s["timing"]["cpu_seconds"] <= 2 * 15 * 60, s["timing"]
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else 0.0
    if load <= (os.cpu_count() or 2):
        assert s["wall_seconds"] <= 15 * 60, s["timing"]
    for name in ("report.md", "summary.json", "pca_rgb.png", "attention.png"):
        assert (tmp_path / "qs" / name).stat().st_size > 1000
