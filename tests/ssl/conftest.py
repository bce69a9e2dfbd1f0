"""Fixtures for the pretraining tests: a tiny config, a tiny world and a tiny CLI run on it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from terrafm.cli import main
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


# The shipped pretrain_tiny_cpu config made smaller still, for `terrafm pretrain` smoke runs
# (callers cap the steps with train.max_steps).
CLI_SMALL = [
    "optim.epochs=2",
    "data.batch_size=4",
    "data.multicrop.global_size=32",
    "data.multicrop.local_size=16",
    "data.multicrop.n_local=2",
    "data.num_workers=0",
    "data.cache_mb=64",
    "head.out_dim=64",
    "head.hidden_dim=64",
    "head.bottleneck_dim=32",
    "train.progress=false",
]


@pytest.fixture
def pretrain_cli() -> Callable[..., int]:
    """``pretrain_cli(world, out, *overrides, opts=())`` -> the exit code of
    ``terrafm pretrain --config pretrain_tiny_cpu [opts]`` on ``world`` writing to ``out``."""

    def run(world: Path, out: Path, *overrides: str, opts: tuple[str, ...] = ()) -> int:
        args = ["pretrain", "--config", "pretrain_tiny_cpu", *opts, f"data.root={world}"]
        return main([*args, f"train.output_dir={out}", *CLI_SMALL, *overrides])

    return run
