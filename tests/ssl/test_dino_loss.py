"""Dual-centred DINO loss against a plain NumPy reference (docs/design.md, "Objective")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terrafm.ssl.loss import DualCenteredDINOLoss, high_frequency_classes

K, B = 32, 6
HF = [10, 30]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_loss(s_views, t_views, c, c_h, alpha, tau_s, tau_t, same_crop=False) -> float:
    """Plain per-pair, per-sample loops in float64."""
    total, pairs = 0.0, 0
    for iq, t in enumerate(t_views):
        pt = _softmax((t - alpha * c - (1 - alpha) * c_h) / tau_t)
        for v, s in enumerate(s_views):
            if v == iq and not same_crop:
                continue
            z = s / tau_s
            log_ps = z - z.max(-1, keepdims=True)
            log_ps = log_ps - np.log(np.exp(log_ps).sum(-1, keepdims=True))
            per_sample = [-(pt[b] * log_ps[b]).sum() for b in range(len(s))]
            total += float(np.mean(per_sample))
            pairs += 1
    return total / pairs


def _case(seed: int = 0, n_local: int = 3):
    g = torch.Generator().manual_seed(seed)
    s_views = [torch.randn(B, K, generator=g) * 3 for _ in range(2 + n_local)]
    t_views = [torch.randn(B, K, generator=g) * 3 for _ in range(2)]
    lc = torch.tensor([10, 20, 30, 40, 10, 50])
    c = torch.randn(1, K, generator=g)
    c_h = torch.randn(1, K, generator=g)
    return s_views, t_views, lc, c, c_h


@pytest.mark.parametrize("dual", [True, False])
def test_loss_matches_reference(dual: bool) -> None:
    s_views, t_views, lc, c, c_h = _case()
    fn = DualCenteredDINOLoss(K, HF, alpha=0.8, center_momentum=0.9, student_temp=0.1, dual=dual)
    fn.center.copy_(c)
    fn.center_h.copy_(c_h)
    out = fn(torch.cat(s_views), torch.cat(t_views), lc, 0.05, n_student_views=5)
    alpha = 0.8 if dual else 1.0
    ref = reference_loss(
        [v.double().numpy() for v in s_views],
        [v.double().numpy() for v in t_views],
        c.double().numpy(),
        c_h.double().numpy(),
        alpha,
        0.1,
        0.05,
    )
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)
    assert fn.alpha == alpha


def test_same_crop_pairs_adds_the_same_crop_pairs() -> None:
    s_views, t_views, lc, c, c_h = _case(seed=3)
    fn = DualCenteredDINOLoss(K, HF, student_temp=0.1, same_crop_pairs=True)
    fn.center.copy_(c)
    fn.center_h.copy_(c_h)
    out = fn(torch.cat(s_views), torch.cat(t_views), lc, 0.05, n_student_views=5)
    args = [[v.double().numpy() for v in s_views], [v.double().numpy() for v in t_views]]
    ref = reference_loss(*args, c.double().numpy(), c_h.double().numpy(), 0.8, 0.1, 0.05, True)
    assert out.loss.item() == pytest.approx(ref, rel=1e-5)


def test_centre_update_matches_reference() -> None:
    s_views, t_views, lc, c, c_h = _case(1)
    fn = DualCenteredDINOLoss(K, HF, alpha=0.8, center_momentum=0.9)
    fn.center.copy_(c)
    fn.center_h.copy_(c_h)
    t = torch.cat(t_views).double().numpy()  # (2B, K), view-major
    lc2 = np.tile(lc.numpy(), 2)
    c_ref = 0.9 * c.double().numpy() + 0.1 * t.mean(0, keepdims=True)
    rows = np.isin(lc2, HF)
    c_h_ref = 0.9 * c_h.double().numpy() + 0.1 * t[rows].mean(0, keepdims=True)
    out = fn(torch.cat(s_views), torch.cat(t_views), lc, 0.04, n_student_views=5)
    assert out.h_count == int(rows.sum()) == 6
    # Centres change only on commit.
    torch.testing.assert_close(fn.center, c)
    fn.commit(out)
    np.testing.assert_allclose(fn.center.double().numpy(), c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fn.center_h.double().numpy(), c_h_ref, rtol=1e-5, atol=1e-6)


def test_high_freq_centre_skipped_without_high_freq_samples() -> None:
    s_views, t_views, _, c, c_h = _case(2)
    lc = torch.tensor([20, 40, 50, 60, 70, 80])  # none in H
    fn = DualCenteredDINOLoss(K, HF)
    fn.center.copy_(c)
    fn.center_h.copy_(c_h)
    out = fn(torch.cat(s_views), torch.cat(t_views), lc, 0.04, n_student_views=5)
    fn.commit(out)
    assert out.h_count == 0
    torch.testing.assert_close(fn.center_h, c_h)  # untouched
    assert not torch.allclose(fn.center, c)  # the global centre still moves


def test_loss_gradient_reaches_student_only() -> None:
    s_views, t_views, lc, _, _ = _case(3, n_local=0)
    s = torch.cat(s_views).requires_grad_(True)
    t = torch.cat(t_views).requires_grad_(True)
    out = DualCenteredDINOLoss(K, HF)(s, t, lc, 0.04, n_student_views=2)
    out.loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_teacher_entropy_is_entropy_of_targets() -> None:
    s_views, t_views, lc, _, _ = _case(4)
    fn = DualCenteredDINOLoss(K, HF)
    out = fn(torch.cat(s_views), torch.cat(t_views), lc, 0.07, n_student_views=5)
    p = _softmax(torch.cat(t_views).double().numpy() / 0.07)  # centres are zero
    ent = -(p * np.log(p)).sum(-1).mean()
    assert out.teacher_entropy.item() == pytest.approx(ent, rel=1e-5)


def test_identical_views_give_entropy_floor() -> None:
    # If the student reproduces the teacher distribution exactly, CE equals the teacher entropy.
    t = torch.randn(B, K) * 2
    fn = DualCenteredDINOLoss(K, [], student_temp=0.1)
    teacher = torch.cat([t, t])
    student = torch.cat([t * 0.1 / 0.05] * 2)  # student_temp / teacher_temp rescales to the same p
    out = fn(student, teacher, torch.full((B,), 10), 0.05, n_student_views=2)
    assert out.loss.item() == pytest.approx(out.teacher_entropy.item(), rel=1e-5)


def test_high_frequency_classes() -> None:
    assert high_frequency_classes({10: 50, 30: 30, 40: 10, 50: 10}) == [10, 30]
    assert high_frequency_classes({10: 5, 20: 5}) == []  # all equal: none exceeds 1/K
    assert high_frequency_classes({10: 9, 20: 1, 95: 0}) == [10]  # absent classes do not count
    assert high_frequency_classes({}) == []
