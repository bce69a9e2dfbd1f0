"""Training subsets: label fractions and named partitions (docs/design.md, "Evaluation protocols / GEO-Bench v1": 100 % and 1 % of labels).

GEO-Bench ships its label-fraction partitions (``0.01x_train`` ...); they are applied by sample id.
For other tasks :func:`fraction_indices` draws a seeded subset: stratified per class for
single-label tasks (``round(fraction * n_c)`` per class, at least one), a plain random subset
(at least one sample) for multi-label tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["fraction_indices", "id_indices", "per_class_indices", "random_indices"]


def fraction_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> list[int]:
    """Indices of a seeded ``fraction`` of the samples (see the module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    n = labels.shape[0]
    if fraction == 1:
        return list(range(n))
    if labels.ndim == 2:
        return random_indices(n, fraction, seed)
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    out: list[int] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = max(1, int(round(fraction * len(members))))
        out += rng.permutation(members)[:k].tolist()
    return sorted(out)


def random_indices(n: int, fraction: float, seed: int = 0) -> list[int]:
    """A seeded random ``fraction`` of ``range(n)`` (at least one index), sorted."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * n)))
    return sorted(np.random.default_rng(seed).permutation(n)[:k].tolist())


def per_class_indices(labels: torch.Tensor, shots: int, seed: int = 0) -> list[int]:
    """Indices of ``shots`` seeded samples per class (all of a class if it has fewer)."""
    if labels.ndim != 1:
        raise ValueError("per-class shots need single-label classes")
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    out: list[int] = []
    for c in np.unique(y):
        out += rng.permutation(np.flatnonzero(y == c))[:shots].tolist()
    return sorted(out)


def id_indices(ids: Sequence[str], wanted: Sequence[str], where: str = "") -> list[int]:
    """Positions of ``wanted`` ids in ``ids`` (ids missing from ``ids`` are an error)."""
    pos = {s: i for i, s in enumerate(ids)}
    missing = [w for w in wanted if w not in pos]
    if missing:
        raise KeyError(
            f"{where}: {len(missing)} partition id(s) not among the samples, e.g. {missing[0]!r}"
        )
    return sorted(pos[w] for w in wanted)
