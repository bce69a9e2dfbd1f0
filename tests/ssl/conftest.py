"""Fixtures for the pretraining tests: a tiny config and deterministic noise batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from terrafm.config import PretrainConfig, load_config

# A very small run: terrafm_tiny, 32 px global / 16 px local crops, a 64-prototype head.
TINY = [
    "model.name=terrafm_tiny",
    "head.out_dim=64",
    "head.hidden_dim=48",
    "head.bottleneck_dim=16",
    "optim.epochs=2",
    "optim.warmup_epochs=1",
    "optim.freeze_last_layer_epochs=0",
    "loss.warmup_teacher_temp_epochs=1",
    "data.batch_size=4",
    "data.global_size=32",
    "data.local_size=16",
    "data.n_local=2",
    "data.num_workers=0",
    "train.amp=false",
    "train.device=cpu",
    "train.log_every=1",
    "train.progress=false",
]


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
    from terrafm.data.synthetic import make_world, world_config

    out = tmp_path_factory.mktemp("world")
    cfg = world_config(
        "quickstart", cells=8, cell_size=48, task_cells_per_class=0, worldcover_rasters=False
    )
    make_world(out, cfg, overwrite=True)
    return out
