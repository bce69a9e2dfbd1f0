"""Whole held-out scenes of the built-in world, for the quickstart's feature figures.

The task chips are small (64-96 px: 4 x 4 to 6 x 6 patches); a PCA or attention map of so few
tokens says little. The held-out cells they were cut from are re-rendered here whole (192 px = 12 x
12 patches in the quickstart world) with :func:`terrafm.world.tasks.render_heldout`, from
the world's own manifest, so the figures show test-split places that pretraining never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from terrafm.sensors import normalize
from terrafm.world.atmosphere import S2_BANDS
from terrafm.world.generate import WorldConfig, plan_world
from terrafm.world.landcover import CLASS_NAMES
from terrafm.world.tasks import render_heldout

__all__ = ["Scene", "heldout_scenes", "world_config_from_manifest"]


@dataclass
class Scene:
    """One held-out scene on its 10 m grid.

    Attributes:
        name: grid cell name.
        target: the WorldCover class the cell was drawn for.
        inputs: sensor -> normalised (C, S, S) tensor (``s1`` and ``s2_l2a``).
        s2_dn: (12, S, S) S2 L2A DN, for the true-colour image.
        codes: (S, S) ESA WorldCover codes.
    """

    name: str
    target: str
    inputs: dict[str, torch.Tensor]
    s2_dn: np.ndarray
    codes: np.ndarray

    @property
    def bands(self) -> tuple[str, ...]:
        return S2_BANDS


def world_config_from_manifest(manifest: Mapping[str, Any]) -> WorldConfig:
    """The :class:`WorldConfig` a world was generated with (from its ``world.json``)."""
    raw = dict(manifest["config"])
    known = {f.name for f in fields(WorldConfig)}
    kw = {k: v for k, v in raw.items() if k in known}
    if "split" in kw:
        kw["split"] = tuple(kw["split"])
    return WorldConfig(**kw)


def _pick(targets: list[int], splits: list[str], n: int) -> list[int]:
    """Up to ``n`` test cells of distinct target classes, spread over the class list."""
    first: dict[int, int] = {}
    for i, (code, split) in enumerate(zip(targets, splits)):
        if split == "test" and code not in first:
            first[code] = i
    cells = [first[c] for c in sorted(first)]
    if len(cells) <= n:
        return cells
    pos = np.linspace(0, len(cells) - 1, n).round().astype(int)
    return [cells[p] for p in pos]


def heldout_scenes(manifest: Mapping[str, Any], n: int) -> list[Scene]:
    """``n`` whole held-out test scenes of the world described by ``manifest``."""
    plan = plan_world(world_config_from_manifest(manifest))
    out = []
    for i in _pick(plan.heldout_targets, plan.heldout_splits, n):
        cell = render_heldout(plan.heldout[i], plan.heldout_splits[i])
        inputs = {
            "s1": normalize(cell.s1, "s1", s1_unit="linear"),  # (2, S, S)
            "s2_l2a": normalize(cell.s2_l2a, "s2_l2a", list(S2_BANDS)),  # (12, S, S)
        }
        out.append(
            Scene(
                name=cell.plan.geo.grid_cell,
                target=CLASS_NAMES[plan.heldout_targets[i]],
                inputs={k: torch.nan_to_num(v) for k, v in inputs.items()},
                s2_dn=cell.s2_l2a,
                codes=cell.codes,
            )
        )
    return out
