"""The Major-TOM loader as the trainer's batch source: switches, resume position, tile cache."""

from __future__ import annotations

from pathlib import Path

import torch

from terrafm.config import PretrainConfig, load_config
from terrafm.ssl.batch import check_batch
from terrafm.ssl.data import TileCache, build_source, sensor_plan
from terrafm.ssl.distributed import DistInfo

BASE = [
    "data.batch_size=4",
    "data.multicrop.global_size=32",
    "data.multicrop.local_size=16",
    "data.multicrop.n_local=1",
    "data.num_workers=0",
]


def _cfg(world: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*BASE, f"data.root={world}", *extra])


def _digest(batch: dict) -> torch.Tensor:
    views = batch["teacher"] + batch["student_global"] + batch["student_local"]
    parts = [v["inputs"][k].flatten() for v in views for k in sorted(v["inputs"])]
    parts += [v["masks"][k].float() for v in views for k in sorted(v["masks"])]
    return torch.cat([*parts, batch["index"].float()])


def test_sensor_plan_follows_the_switches(tmp_path: Path) -> None:
    def plan(*o: str) -> tuple[list[str], str]:
        return sensor_plan(_cfg(tmp_path, "data.sensors=[s1, s2_l2a]", *o))

    assert plan() == (["s1", "s2_l2a"], "independent")
    assert plan("data.multicrop.sensor_draw=all_or_one") == (["s1", "s2_l2a"], "all_or_one")
    assert plan("data.fusion=false") == (["s1", "s2_l2a"], "one")
    assert plan("data.modality_aug=false") == (["s1", "s2_l2a"], "all")
    assert plan("data.modality_aug=false", "data.fusion=false") == (["s2_l2a"], "all")


def test_one_sensor_per_view_without_fusion(mini_world: Path) -> None:
    src = build_source(_cfg(mini_world, "data.fusion=false"), DistInfo())
    batch = next(src.batches(0, 0))
    check_batch(batch)
    for v in batch["teacher"] + batch["student_global"] + batch["student_local"]:
        used = torch.stack(list(v["masks"].values()), 1).sum(1)
        assert (used == 1).all()


def test_source_resumes_mid_epoch_and_cache_changes_nothing(mini_world: Path) -> None:
    src = build_source(_cfg(mini_world), DistInfo())
    assert src.steps_per_epoch >= 3
    assert sum(src.landcover_counts.values()) == len(src.loader.dataset)
    straight = [_digest(b) for b in src.batches(1, 0)]
    resumed = [_digest(b) for b in build_source(_cfg(mini_world), DistInfo()).batches(1, 2)]
    assert len(resumed) == len(straight) - 2
    for a, b in zip(straight[2:], resumed):
        assert torch.equal(a, b)
    cached = build_source(_cfg(mini_world, "data.cache_mb=64"), DistInfo())
    assert isinstance(cached.loader.dataset.tiles, TileCache)
    for _ in range(2):  # a cold and a warm pass give the same batches
        got = [_digest(b) for b in cached.batches(1, 0)]
        assert all(torch.equal(a, b) for a, b in zip(straight, got))
    assert cached.loader.dataset.tiles.used > 0
