"""Per-step schedules of the pretraining recipe, as precomputed arrays (docs/design.md, "Objective", DINO v1).

- learning rate: linear warm-up from 0, then cosine to ``min_lr``;
- weight decay: cosine from 0.04 to 0.4;
- teacher EMA momentum: cosine from 0.996 to 1.0;
- teacher temperature: linear from 0.04 to 0.06 over the warm-up epochs, then constant.

Every schedule is a pure function of (epochs, steps per epoch, values), so a resumed run reads the
same value at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terrafm.schedules import cosine_schedule

__all__ = ["Schedules", "cosine_schedule", "linear_warmup_constant"]


def linear_warmup_constant(
    start: float, end: float, total_steps: int, warmup_steps: int
) -> np.ndarray:
    """Linear from ``start`` to ``end`` over ``warmup_steps``, then ``end`` (teacher temperature)."""
    if total_steps <= 0:
        raise ValueError(f"schedule length must be positive, got {total_steps}")
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    warm = np.linspace(start, end, warmup_steps) if warmup_steps > 1 else np.full(warmup_steps, end)
    return np.concatenate([warm, np.full(total_steps - warmup_steps, end)]).astype(np.float64)


@dataclass(frozen=True)
class Schedules:
    """All per-step values of a run."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_steps: int

    @property
    def total_steps(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        """The scheduled values at ``step`` (clamped to the last step)."""
        i = min(max(step, 0), self.total_steps - 1)
        return {
            "lr": float(self.lr[i]),
            "wd": float(self.weight_decay[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
        }

    @classmethod
    def build(
        cls,
        *,
        epochs: int,
        steps_per_epoch: int,
        lr: float,
        min_lr: float,
        warmup_epochs: float,
        weight_decay: float,
        weight_decay_end: float,
        momentum: float,
        momentum_end: float,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_temp_epochs: float,
        freeze_last_layer_epochs: float,
    ) -> Schedules:
        """Schedules of a run of ``epochs x steps_per_epoch`` steps (epoch counts may be fractional)."""
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        total = epochs * steps_per_epoch
        return cls(
            lr=cosine_schedule(lr, min_lr, total, round(warmup_epochs * steps_per_epoch)),
            weight_decay=cosine_schedule(weight_decay, weight_decay_end, total),
            momentum=cosine_schedule(momentum, momentum_end, total),
            teacher_temp=linear_warmup_constant(
                warmup_teacher_temp,
                teacher_temp,
                total,
                round(warmup_teacher_temp_epochs * steps_per_epoch),
            ),
            freeze_last_layer_steps=round(freeze_last_layer_epochs * steps_per_epoch),
        )
