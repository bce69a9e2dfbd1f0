"""The investigation switch of ``benchmarks/pretrain_variants.py``: Sinkhorn-Knopp teacher targets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terrafm.ssl.loss import DualCenteredDINOLoss

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_variants.py"


@pytest.fixture(scope="module")
def variants():
    spec = importlib.util.spec_from_file_location("pretrain_variants", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cosine_logits(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, 32, generator=g), dim=1)
    w = F.normalize(torch.randn(k, 32, generator=g), dim=1)
    return z @ w.t()  # in [-1, 1], as a weight-normalised last layer gives


def test_sinkhorn_probs_equal_a_plain_float64_loop(variants):
    logits, temp, n, k = _cosine_logits(24, 40), 0.05, 24, 40
    q = variants.sinkhorn_probs(logits, temp).double().numpy()
    # Reference: alternate row (prototype) and column (sample) normalisation of exp(logits / T).
    ref = np.exp(logits.double().numpy() / temp).T  # (K, N)
    ref /= ref.sum()
    for _ in range(3):
        ref /= ref.sum(axis=1, keepdims=True) * k
        ref /= ref.sum(axis=0, keepdims=True) * n
    np.testing.assert_allclose(q, (ref * n).T, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)  # each sample's target sums to 1
    # Three iterations bring the batch's mass per prototype far closer to even than the softmax.
    plain = F.softmax(logits / temp, dim=-1).double().numpy()
    uneven = np.abs(plain.sum(0) - n / k).max()
    assert np.abs(q.sum(0) - n / k).max() < 0.5 * n / k < uneven


def test_sinkhorn_spreads_a_batch_that_centering_leaves_on_few_prototypes(variants):
    # Every sample prefers the same prototypes: the plain softmax piles the batch onto them.
    logits = _cosine_logits(32, 64) * 0.2
    logits[:, :4] += 0.8
    plain = F.softmax(logits / 0.05, dim=-1).mean(0)
    sk = variants.sinkhorn_probs(logits, 0.05).mean(0)
    assert plain[:4].sum() > 0.9
    assert sk[:4].sum() < 2 * 4 / 64


def test_patched_swaps_only_cls_targets_and_restores(variants):
    loss = DualCenteredDINOLoss(16)
    cls, patches = _cosine_logits(8, 16), _cosine_logits(8 * 3, 16, seed=1).reshape(8, 3, 16)
    plain_cls, plain_patch = loss.teacher_probs(cls, 0.05), loss.teacher_probs(patches, 0.05)
    with variants.patched("paper_sinkhorn"):
        torch.testing.assert_close(
            loss.teacher_probs(cls, 0.05), variants.sinkhorn_probs(cls, 0.05)
        )
        torch.testing.assert_close(loss.teacher_probs(patches, 0.05), plain_patch)
    torch.testing.assert_close(loss.teacher_probs(cls, 0.05), plain_cls)
    with variants.patched("recipe"):  # no switch: the step is untouched
        torch.testing.assert_close(loss.teacher_probs(cls, 0.05), plain_cls)
    assert variants.VARIANTS["paper_sinkhorn"] == []  # the shipped recipe's config
