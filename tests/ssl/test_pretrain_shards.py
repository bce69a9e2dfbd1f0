"""Pretraining on a shard store (``data.shards``): the trainer's batches and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_config import TINY

from terrafm.config import PretrainConfig, load_config
from terrafm.data.shards import prepare_shards
from terrafm.ssl.checkpointing import load_training_state
from terrafm.ssl.data import build_source
from terrafm.ssl.distributed import DistInfo
from terrafm.ssl.train import pretrain


@pytest.fixture(scope="module")
def shards(mini_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "store"
    prepare_shards([mini_world], out, ["s1", "s2_l1c", "s2_l2a"])
    return out


def _cfg(tmp: Path, shards: Path, *extra: str, out: str = "run") -> PretrainConfig:
    over = [*TINY, f"data.shards={shards}", "data.augment_device=cpu"]
    return load_config(PretrainConfig, None, [*over, f"train.output_dir={tmp / out}", *extra])


def test_shard_source_matches_the_parquet_source(
    mini_world: Path, shards: Path, tmp_path: Path
) -> None:
    a = build_source(_cfg(tmp_path, shards), DistInfo())
    b = build_source(
        _cfg(tmp_path, shards, f"data.root={mini_world}", "data.shards=null"), DistInfo()
    )
    assert a.steps_per_epoch == b.steps_per_epoch and a.landcover_counts == b.landcover_counts
    for x, y in zip(a.batches(1, 0), b.batches(1, 0)):
        assert torch.equal(x["index"], y["index"])
        for vx, vy in zip(x["student_local"], y["student_local"]):
            for s in vx["inputs"]:
                assert torch.equal(vx["masks"][s], vy["masks"][s])
                assert (vx["inputs"][s] - vy["inputs"][s]).abs().max() < 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("path", ["shards", "parquet"])
def test_training_resumes_exactly(
    mini_world: Path, shards: Path, tmp_path: Path, path: str
) -> None:
    # Both loaders: a DataLoader iterator used to draw its seed from torch's global generator,
    # so the resumed run's dropout stream (and losses) drifted from the straight run's.
    extra = () if path == "shards" else (f"data.root={mini_world}", "data.shards=null")
    straight = pretrain(_cfg(tmp_path, shards, "train.max_steps=4", *extra, out="straight"))
    pretrain(_cfg(tmp_path, shards, "train.max_steps=2", *extra, out="resumed"))
    resumed = pretrain(
        _cfg(tmp_path, shards, "train.max_steps=4", *extra, out="resumed"), resume=True
    )
    assert straight.step == resumed.step == 4
    loss_a = [json.loads(r)["loss"] for r in straight.metrics.read_text().splitlines()]
    loss_b = [json.loads(r)["loss"] for r in resumed.metrics.read_text().splitlines()]
    assert len(loss_a) == 4 and loss_b == loss_a
    a, b = load_training_state(straight.checkpoint), load_training_state(resumed.checkpoint)
    for part in ("student", "teacher", "loss"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6, msg=f"{part}.{k}")
