"""Shards under two gloo ranks: each rank reads its own part of the epoch, the parts partition it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.shards import build_shard_loader, prepare_shards

pytestmark = pytest.mark.dist

SENSORS = ("s1", "s2_l1c", "s2_l2a")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loader = build_shard_loader(
            store,
            SENSORS,
            2,
            views=MultiCropConfig(global_size=16, local_size=16, n_local=1),
            replacement=False,
            seed=5,
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            num_workers=1,
            augment_device="cpu",
        )
        loader.set_epoch(1)
        seen = [i for b in loader for i in b["index"].tolist()]
        positions = [pos for _, _, pos in loader.sampler]
        Path(out, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "pos": positions}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_read_disjoint_tiles(mt_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    prepare_shards([mt_root], store, SENSORS, tiles_per_shard=4)
    mp.spawn(_rank, args=(_free_port(), str(store), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert len(r0["seen"]) == len(r1["seen"]) == 10  # 20 tiles, batch 2 on each rank
    assert not set(r0["seen"]) & set(r1["seen"])  # without replacement: disjoint tiles
    assert set(r0["seen"]) | set(r1["seen"]) == set(range(20))
    assert sorted(r0["pos"] + r1["pos"]) == list(range(20))  # the ranks partition the stream
