"""Learning-rate schedules of the evaluation protocols, as plain functions of the step.

- :func:`warmup_cosine`: linear warm-up to the base rate, then cosine decay to a floor (GEO-Bench
  fine-tuning: warm-up 10 %, cosine to 1e-6).
- :func:`one_cycle`: Copernicus-Bench's schedule, ``torch.optim.lr_scheduler.OneCycleLR`` with
  cosine annealing and the warm-up as ``pct_start`` (its momentum cycling included).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import OneCycleLR

__all__ = ["one_cycle", "set_lr", "warmup_cosine"]


def warmup_cosine(
    step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, final_lr: float = 1e-6
) -> float:
    """Learning rate at ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * progress))


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
