"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terrafm.eval.metrics import SegmentationMeter, micro_f1, micro_map, miou, rankme, top1


def test_top1_from_classes_and_scores():
    assert top1(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]), 3) == pytest.approx(75.0)
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert top1(scores, torch.tensor([1, 1]), 2) == pytest.approx(50.0)


def test_micro_f1_by_hand():
    pred = torch.tensor([[1, 0, 1], [0, 1, 0]])
    target = torch.tensor([[1, 1, 0], [0, 1, 0]])
    # TP = 2, FP = 1, FN = 1 -> F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    assert micro_f1(pred, target) == pytest.approx(200 / 3, rel=1e-5)


def test_micro_map_by_hand():
    scores = torch.tensor([[0.9, 0.2], [0.4, 0.8], [0.3, 0.1]])
    target = torch.tensor([[1, 0], [0, 1], [1, 0]])
    # flattened ranking: .9(+) .8(+) .4(-) .3(+) .2(-) .1(-): AP = (1 + 1 + 3/4) / 3
    assert micro_map(scores, target) == pytest.approx(100 * (2.75 / 3), rel=1e-5)


def test_miou_ignore_index_and_absent_class():
    pred = torch.tensor([[0, 0, 1, 1, 2]])
    target = torch.tensor([[0, 1, 1, 255, 255]])
    # class 0: I=1, U=2; class 1: I=1, U=2; class 2: only predicted on an ignored pixel -> absent
    assert miou(pred, target, 3) == pytest.approx(50.0)
    meter = SegmentationMeter(3)
    meter.update(pred[:, :2], target[:, :2])
    meter.update(pred[:, 2:], target[:, 2:])
    res = meter.compute()
    assert res["miou"] == pytest.approx(50.0)
    assert res["per_class_iou"] == pytest.approx([50.0, 50.0, 0.0])
    logits = (
        torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float()[..., None]
    )  # (1, 3, 5, 1)
    assert miou(logits, target[..., None], 3) == pytest.approx(50.0)


def test_rankme_counts_equal_directions_and_matches_a_numpy_computation():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(200, 16, generator=g, dtype=torch.float64))
    for k in (1, 3, 16):  # k equal singular values, the rest zero: effective rank k
        s = torch.zeros(16, dtype=torch.float64)
        s[:k] = 2.0
        assert rankme(q * s) == pytest.approx(k, rel=1e-4)
    x = torch.randn(300, 24, generator=g) * torch.linspace(0.1, 3.0, 24)
    sv = np.linalg.svd(x.double().numpy(), compute_uv=False)
    p = sv / sv.sum() + 1e-7
    assert rankme(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)
    assert 1.0 < rankme(x) < 24.0


def test_rankme_rejects_a_non_matrix():
    with pytest.raises(ValueError, match="rankme"):
        rankme(torch.zeros(3))
