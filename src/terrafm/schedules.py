"""Schedules as data: values as pure functions of the step (docs/design.md, "Objective").

- :func:`warmup_cosine`: linear warm-up from ``warmup_start`` to ``base`` over ``warmup_steps``,
  then a half cosine from ``base`` down (or up) to ``final``, reached at the last step. It is the
  only implementation of that shape: pretraining reads it as a precomputed array
  (:func:`cosine_schedule`: learning rate, weight decay, teacher momentum), the evaluation
  protocols (fine-tuning, the segmentation probe) one step at a time.
- :func:`one_cycle`: Copernicus-Bench's schedule, ``torch.optim.lr_scheduler.OneCycleLR`` with
  cosine annealing and the warm-up as ``pct_start`` (its momentum cycling included).
- :func:`set_lr`: writes a rate into an optimiser, honouring per-group ``lr_scale``.

With ``W`` warm-up steps of ``T`` and ``n = T - W`` cosine steps, the value at step ``s`` is
``warmup_start + (base - warmup_start) * s / W`` for ``s < W``, else
``final + (base - final) * (1 + cos(pi * (s - W) / max(n - 1, 1))) / 2``: the warm-up starts at
``warmup_start`` and stops one step short of ``base``; the cosine starts at ``base`` and ends
exactly at ``final``. Steps past the end stay at ``final``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["cosine_schedule", "one_cycle", "set_lr", "warmup_cosine"]


def _warmup_cosine(
    steps: np.ndarray,
    total_steps: int,
    base: float,
    final: float,
    warmup_steps: int,
    warmup_start: float,
) -> np.ndarray:
    if total_steps <= 0:
        raise ValueError(f"schedule length must be positive, got {total_steps}")
    w = min(max(int(warmup_steps), 0), total_steps)
    s = np.asarray(steps, dtype=np.float64)
    warm = warmup_start + (base - warmup_start) * s / max(w, 1)
    t = np.clip((s - w) / max(total_steps - w - 1, 1), 0.0, 1.0)  # 0 .. 1 over the cosine part
    cos = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * t))
    return np.where(s < w, warm, cos)


def warmup_cosine(
    step: int,
    total_steps: int,
    base: float,
    warmup_steps: int = 0,
    final: float = 1e-6,
    warmup_start: float = 0.0,
) -> float:
    """The value at ``step`` (0-based) of a ``total_steps`` warm-up + cosine schedule.

    Args:
        step: the step; past the end the value stays at ``final``.
        total_steps: length of the schedule.
        base: value at the end of the warm-up (the peak learning rate).
        warmup_steps: steps of linear warm-up (clipped to ``total_steps``).
        final: value at the last step.
        warmup_start: value at step 0 of the warm-up.
    """
    return float(
        _warmup_cosine(np.asarray(step), total_steps, base, final, warmup_steps, warmup_start)
    )


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
) -> np.ndarray:
    """:func:`warmup_cosine` at every step, as a float64 array of ``total_steps`` values.

    Args:
        base: value at the end of the warm-up.
        final: value at the last step.
        total_steps: length of the schedule.
        warmup_steps: steps of linear warm-up from ``warmup_start`` (clipped to ``total_steps``).
        warmup_start: value at step 0 of the warm-up.
    """
    if total_steps <= 0:
        raise ValueError(f"schedule length must be positive, got {total_steps}")
    return _warmup_cosine(
        np.arange(total_steps), total_steps, base, final, warmup_steps, warmup_start
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times the group's ``lr_scale`` (layer-wise decay)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def one_cycle(
    optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float, warmup_frac: float = 0.0
) -> OneCycleLR:
    """Copernicus-Bench's one-cycle cosine schedule (stepped once per batch)."""
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(1, total_steps),
        anneal_strategy="cos",
        pct_start=float(min(max(warmup_frac, 0.0), 1.0)),
    )
