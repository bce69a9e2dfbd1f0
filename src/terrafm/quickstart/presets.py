"""Quickstart presets: world size, pretraining recipe and probe settings, scaled to a budget.

- ``quickstart``: the README's main command; world, pretraining and evaluation in at most 15
  minutes on a 2-core CPU (measured figures in ``docs/quickstart.md``).
- ``micro``: the same pipeline shrunk to seconds, for smoke tests; its numbers mean nothing.

A preset names a world preset of :mod:`terrafm.world.generate` with overrides, a shipped pretraining
config with ``key=value`` overrides (the strict merge of :mod:`terrafm.config`), and the probes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from terrafm.quickstart.evaluate import ProbeConfig

__all__ = ["PRESETS", "SENSOR_SETS", "Preset", "get_preset"]

# S1 alone, S2 alone, and both fused (docs/design.md, "Fusion"); "S2" is the surface-reflectance product.
SENSOR_SETS: tuple[tuple[str, ...], ...] = (("s1",), ("s2_l2a",), ("s1", "s2_l2a"))


@dataclass(frozen=True)
class Preset:
    """Everything the quickstart pipeline scales.

    Attributes:
        name: preset name.
        world_preset: preset of :data:`terrafm.world.generate.PRESETS`.
        world_overrides: :class:`~terrafm.world.generate.WorldConfig` fields replaced.
        pretrain_config: shipped pretraining config (``terrafm/configs/<name>.yaml``).
        pretrain_overrides: ``key=value`` overrides on top of it.
        probes: how the encoders are evaluated.
        scenes: held-out scenes in the PCA and attention figures.
        threads: torch CPU threads for evaluation (pretraining sets its own).
        controls: also measure the controls (raw-pixel probes, patch-majority ceiling).
        control_sensors: sensor choices (``s2_l2a``, ``s1+s2_l2a`` ...) of the raw-pixel kNN
            and linear probe.
        control_seg_sensors: those of them that also get the raw-pixel segmentation probe. Off
            in the default preset: a linear map from a patch's 3072 raw values to its 16 x 16 x K
            logits costs about 12 CPU seconds per epoch on the quickstart's split, 10 minutes
            for the 50 epochs (``benchmarks/quickstart_probe.py pixels`` measures it).
    """

    name: str
    world_preset: str
    world_overrides: Mapping[str, Any] = field(default_factory=dict)
    pretrain_config: str = "pretrain_quickstart"
    pretrain_overrides: tuple[str, ...] = ()
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    scenes: int = 4
    threads: int = 1
    controls: bool = True
    control_sensors: tuple[str, ...] = ("s2_l2a", "s1+s2_l2a")
    control_seg_sensors: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    "quickstart": Preset(
        name="quickstart",
        world_preset="quickstart",
        world_overrides={"cells": 256, "task_cells_per_class": 24, "min_purity": 0.7},
    ),
    "micro": Preset(
        name="micro",
        world_preset="quickstart",
        world_overrides={
            "cells": 6,
            "cell_size": 96,
            "task_cells_per_class": 2,
            "cls_chip": 32,
            "seg_chip": 48,
            "min_purity": 0.4,
        },
        pretrain_overrides=(
            "data.batch_size=8",
            "data.multicrop.global_size=32",
            "data.multicrop.local_size=16",
            "data.multicrop.n_local=2",
            "data.num_workers=0",
            "data.cache_mb=64",
            "head.out_dim=64",
            "head.hidden_dim=64",
            "head.bottleneck_dim=32",
            "optim.epochs=2",
            "optim.warmup_epochs=0.5",
            "loss.warmup_teacher_temp_epochs=1",
            "train.log_every=1",
        ),
        probes=ProbeConfig(fraction_draws=2, linear_epochs=5, seg_epochs=3),
        scenes=2,
        control_seg_sensors=("s2_l2a", "s1+s2_l2a"),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (a clear error listing the others otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown quickstart preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]
