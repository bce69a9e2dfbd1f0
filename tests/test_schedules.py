"""The one warm-up + cosine schedule, checked against plain formulas and torch's own schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terrafm.schedules import cosine_schedule, warmup_cosine


def _plain(step, total, base, warmup, final, start):
    """The schedule written out step by step with math (docs/design.md, "Objective")."""
    if step < warmup:
        return start + (base - start) * step / warmup
    n = total - warmup
    t = min((step - warmup) / max(n - 1, 1), 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize(
    "total,warmup,base,final,start",
    [
        (100, 10, 1.0, 0.1, 0.0),
        (37, 0, 0.996, 1.0, 0.0),
        (20, 5, 5e-4, 1e-6, 1e-5),
        (3, 3, 1, 0, 0),
    ],
)
def test_matches_the_plain_formula_scalar_and_array(total, warmup, base, final, start):
    arr = cosine_schedule(base, final, total, warmup, start)
    ref = [_plain(s, total, base, warmup, final, start) for s in range(total)]
    np.testing.assert_allclose(arr, ref, rtol=1e-12, atol=1e-15)
    for s in range(total):
        assert warmup_cosine(s, total, base, warmup, final, start) == arr[s]
    assert warmup_cosine(total + 5, total, base, warmup, final, start) == pytest.approx(final)


def test_matches_torch_linear_then_cosine_annealing():
    """torch's LinearLR for the warm-up and CosineAnnealingLR (T_max = n - 1) for the rest."""
    total, warmup, base, final = 60, 12, 0.3, 0.01
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-12, total_iters=warmup)
    seen = []
    for _ in range(warmup):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        warm.step()
    for g in opt.param_groups:
        g["lr"] = base
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup - 1, eta_min=final)
    for _ in range(total - warmup):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        cos.step()
    np.testing.assert_allclose(cosine_schedule(base, final, total, warmup), seen, atol=1e-9)


def test_pretraining_and_evaluation_read_this_schedule():
    import terrafm.eval.finetune as finetune
    import terrafm.eval.segmentation as segmentation
    from terrafm.ssl import schedules

    assert finetune.warmup_cosine is warmup_cosine
    assert segmentation.warmup_cosine is warmup_cosine
    assert schedules.cosine_schedule is cosine_schedule  # what Schedules.build reads
    np.testing.assert_array_equal(
        cosine_schedule(1e-3, 1e-6, 20, 5), [warmup_cosine(i, 20, 1e-3, 5, 1e-6) for i in range(20)]
    )


def test_bad_length_is_an_error():
    with pytest.raises(ValueError, match="positive"):
        warmup_cosine(0, 0, 1.0)
