"""Fixtures for the pretraining tests: a tiny config and deterministic noise batches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from terrafm.config import PretrainConfig, load_config

# Under --import-mode=importlib, make this folder's helper module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_config import TINY


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """``tiny_cfg(*overrides)`` -> a validated PretrainConfig writing under tmp_path/run."""

    def make(*overrides: str, out: str = "run") -> PretrainConfig:
        return load_config(
            PretrainConfig, None, [*TINY, f"train.output_dir={tmp_path / out}", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny built-in world (8 cells of 48 px, no tasks): real Major-TOM layout, seconds to make."""
    from terrafm.world.generate import make_world, world_config

    out = tmp_path_factory.mktemp("world")
    cfg = world_config(
        "quickstart", cells=8, cell_size=48, task_cells_per_class=0, worldcover_rasters=False
    )
    make_world(out, cfg, overwrite=True)
    return out
