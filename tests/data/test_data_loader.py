"""build_pretrain_loader: exact mid-epoch resume across DataLoader workers, ranks, pinning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from terrafm.data.loader import PretrainLoader, build_pretrain_loader
from terrafm.data.multicrop import MultiCropConfig

SMALL = MultiCropConfig(global_size=16, local_size=16, n_local=1)
SENSORS = ("s1", "s2_l2a")


def _loader(
    root: Path, workers: int = 0, rank: int = 0, world: int = 1, pin: bool = False
) -> PretrainLoader:
    return build_pretrain_loader(
        [root],
        SENSORS,
        3,
        views=SMALL,
        seed=11,
        rank=rank,
        world_size=world,
        num_workers=workers,
        pin_memory=pin,
    )


def _digest(batch: dict) -> tuple[list[int], torch.Tensor]:  # type: ignore[type-arg]
    view = batch["student_local"][0]
    return batch["index"].tolist(), torch.cat([view["inputs"][s].flatten(1) for s in SENSORS], 1)


def _epoch(loader: PretrainLoader, epoch: int) -> list[tuple[list[int], torch.Tensor]]:
    loader.set_epoch(epoch)
    return [_digest(b) for b in loader]


def test_resume_mid_epoch_with_workers_matches_uninterrupted(mt_root: Path) -> None:
    straight = _epoch(_loader(mt_root), 1)
    assert len(straight) == 6  # 20 tiles // 3
    run = _loader(mt_root, workers=2)
    run.set_epoch(1)
    it = iter(run)
    head = [_digest(next(it)) for _ in range(2)]
    state = run.state_dict()
    del it
    assert state["sampler"]["position"] == 6  # type: ignore[index]
    resumed = _loader(mt_root, workers=2)
    resumed.load_state_dict(state)
    tail = _epoch(resumed, 1)
    assert len(head) + len(tail) == len(straight)
    for (ia, xa), (ib, xb) in zip(head + tail, straight):
        assert ia == ib and torch.equal(xa, xb)


def test_ranks_get_disjoint_positions(mt_root: Path) -> None:
    shards = [_loader(mt_root, rank=r, world=2) for r in range(2)]
    for s in shards:
        s.set_epoch(0)
    positions = [list(s.sampler) for s in shards]
    assert not {p for *_, p in positions[0]} & {p for *_, p in positions[1]}
    assert len(shards[0]) == len(shards[1]) == 3  # 10 samples per rank // 3


def test_pin_memory_with_a_worker(mt_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no accelerator here: pinning is skipped with a warning
        batch = next(iter(_loader(mt_root, workers=1, pin=True)))
    if torch.cuda.is_available():
        assert batch["teacher"][0]["inputs"]["s1"].is_pinned()
    assert batch["teacher"][0]["inputs"]["s2_l2a"].shape == (3, 12, 16, 16)


def test_too_few_samples_for_a_batch(mt_root: Path) -> None:
    with pytest.raises(ValueError, match="fewer than batch_size"):
        build_pretrain_loader([mt_root], SENSORS, 64, views=SMALL)
