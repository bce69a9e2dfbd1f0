"""Patch masks of the opt-in masked patch distillation (docs/pretraining.md).

Each global view of the student is masked with probability ``prob``; a masked view gets
``round(ratio * P)`` masked patches of its ``P``, ``ratio`` drawn uniformly from
``[low, high]``. ``block`` masking covers them with rectangles of random area and aspect ratio
(log-uniform in [0.3, 1 / 0.3]) that never exceed the count, then tops up single patches if
overlaps left it short; ``random`` picks the patches uniformly. Every draw comes from torch's
global generator (or ``generator``), so a checkpoint's RNG state replays the masks exactly.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["MaskMode", "draw_token_masks"]

MaskMode = Literal["block", "random"]
_ASPECT = (math.log(0.3), math.log(1 / 0.3))


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(hi: int, g: torch.Generator | None) -> int:
    """Uniform integer in [0, hi)."""
    return int(torch.randint(hi, (), generator=g))


def _block(gh: int, gw: int, count: int, g: torch.Generator | None) -> torch.Tensor:
    m = torch.zeros(gh, gw, dtype=torch.bool)
    for _ in range(10 * count):
        have = int(m.sum())
        if have >= count:
            break
        area = _uniform(1.0, float(count - have), g)
        aspect = math.exp(_uniform(*_ASPECT, g))
        h = min(gh, max(1, round(math.sqrt(area * aspect))))
        w = min(gw, max(1, round(math.sqrt(area / aspect))))
        top, left = _randint(gh - h + 1, g), _randint(gw - w + 1, g)
        new = m.clone()
        new[top : top + h, left : left + w] = True
        if int(new.sum()) <= count:
            m = new
    short = count - int(m.sum())
    if short > 0:  # overlapping rectangles left it short: single patches
        free = torch.nonzero(~m.flatten()).flatten()
        pick = free[torch.randperm(free.numel(), generator=g)[:short]]
        m.view(-1)[pick] = True
    return m.flatten()


def draw_token_masks(
    n: int,
    gh: int,
    gw: int,
    ratio: tuple[float, float],
    prob: float,
    mode: MaskMode = "block",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masks of ``n`` views on a ``gh x gw`` patch grid: (n, gh * gw) bool, True = masked.

    Args:
        n: views (samples x global views).
        gh: grid height.
        gw: grid width.
        ratio: ``(low, high)`` share of the patches masked in a masked view.
        prob: probability that a view is masked at all.
        mode: ``block`` or ``random``.
        generator: torch generator (default: the global one).
    """
    if mode not in ("block", "random"):
        raise ValueError(f"mask mode must be 'block' or 'random', got {mode!r}")
    if not 0.0 <= ratio[0] <= ratio[1] < 1.0:
        raise ValueError(f"mask ratio must be (low, high) with 0 <= low <= high < 1, got {ratio}")
    p = gh * gw
    out = torch.zeros(n, p, dtype=torch.bool)
    for i in range(n):
        if float(torch.rand((), generator=generator)) >= prob:
            continue
        count = round(_uniform(ratio[0], ratio[1], generator) * p)
        if count == 0:
            continue
        if mode == "random":
            out[i, torch.randperm(p, generator=generator)[:count]] = True
        else:
            out[i] = _block(gh, gw, count, generator)
    return out
