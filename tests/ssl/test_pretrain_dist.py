"""Two-process gloo runs: all-reduced centres and exact resume under DDP (and FSDP2)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_config import TINY as SHARED_TINY

from terrafm.config import PretrainConfig, load_config
from terrafm.ssl.batch import RandomSource
from terrafm.ssl.checkpointing import load_training_state
from terrafm.ssl.loss import DualCenteredDINOLoss

pytestmark = pytest.mark.dist

K, B = 16, 6
HF = [10, 30]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _teacher_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 2 * B, K, generator=g)  # (views, global batch, K)
    # H samples only in the second half: rank 0 sees none, rank 1 some (uneven counts).
    lc = torch.tensor([20, 40, 50, 60, 20, 40, 10, 30, 10, 50, 60, 30])
    return t, lc


def _centre_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        t, lc = _teacher_batch()
        mine = slice(rank * B, (rank + 1) * B)
        fn = DualCenteredDINOLoss(K, HF, center_momentum=0.9)
        local = torch.cat([t[0, mine], t[1, mine]])  # view-major, this rank's samples
        c, c_h, n_h = fn.centre_update(local, lc[mine])
        torch.save({"c": c, "c_h": c_h, "n_h": n_h}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_centre_update_equals_single_process_on_concatenated_batch(tmp_path: Path) -> None:
    mp.spawn(_centre_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    t, lc = _teacher_batch()
    single = DualCenteredDINOLoss(K, HF, center_momentum=0.9)
    c, c_h, n_h = single.centre_update(torch.cat([t[0], t[1]]), lc)
    assert n_h == 8  # 4 samples of H x 2 views, all on rank 1
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["c"], c, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["c_h"], c_h, rtol=1e-6, atol=1e-6)
        assert got["n_h"] == n_h


# The shared tiny run, with the batch and crops of the RandomSource the ranks train on.
TINY = [*SHARED_TINY, "data.batch_size=2", "data.multicrop.n_local=1", "train.threads=1"]


def _train_worker(rank: int, port: int, overrides: list[str], resume: bool) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from terrafm.ssl.train import pretrain

    cfg = load_config(PretrainConfig, None, [*TINY, *overrides])
    src = RandomSource(2, steps_per_epoch=3, rank=rank, global_size=32, local_size=16, n_local=1)
    pretrain(cfg, src, resume=resume)


def _run(overrides: list[str], resume: bool = False) -> None:
    mp.spawn(_train_worker, args=(_free_port(), overrides, resume), nprocs=2, join=True)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_resume_is_exact(tmp_path: Path, strategy: str) -> None:
    s = f"train.strategy={strategy}"
    _run([s, "train.max_steps=4", f"train.output_dir={tmp_path / 'straight'}"])
    _run([s, "train.max_steps=2", f"train.output_dir={tmp_path / 'resumed'}"])
    _run([s, "train.max_steps=4", f"train.output_dir={tmp_path / 'resumed'}"], resume=True)
    a = load_training_state(tmp_path / "straight" / "checkpoint.pt")
    b = load_training_state(tmp_path / "resumed" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4 and a["world_size"] == 2
    assert len(a["rng"]) == 2  # both ranks' RNG states
    for part in ("student", "teacher", "loss"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6, msg=f"{part}.{k}")
    # The ranks saw different data, yet the replicas agree: the teacher moved off its start.
    assert a["loss"]["center"].abs().sum() > 0


def _gloo_threads() -> list[str]:
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(n for n in names if "gloo" in n or "tcpstore" in n)


def _threads_worker(rank: int, port: int, out: str) -> None:
    before = _gloo_threads()
    _train_worker(
        rank, port, ["train.strategy=fsdp", "train.max_steps=1", f"train.output_dir={out}"], False
    )
    Path(out, f"threads{rank}.json").write_text(json.dumps([before, _gloo_threads()]))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_fsdp_run_leaves_no_process_group_behind(tmp_path: Path) -> None:
    """After pretrain() the gloo backend is gone: its threads were joined by
    destroy_process_group, not left to interpreter shutdown (where tearing them down aborted a
    rank now and then). DTensor's caches used to keep FSDP2's device mesh, and through it the
    process group, alive."""
    mp.spawn(_threads_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        before, after = json.loads((tmp_path / f"threads{rank}.json").read_text())
        assert before == [] and after == [], f"rank {rank}: threads left {after}"


def test_torchrun_launch_line(mini_world: Path, tmp_path: Path) -> None:
    """The documented single-node line, on CPU with gloo: 2 processes, one checkpoint."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "terrafm.cli",
        "pretrain",
        "--config",
        "pretrain_tiny_cpu",
        f"data.root={mini_world}",
        f"train.output_dir={out}",
        "train.max_steps=2",
        "data.batch_size=2",
        "data.multicrop.global_size=32",
        "data.multicrop.local_size=16",
        "data.multicrop.n_local=1",
        "data.num_workers=0",
        "head.out_dim=64",
        "head.hidden_dim=64",
        "head.bottleneck_dim=32",
        "train.progress=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_training_state(out / "checkpoint.pt")
    assert ck["world_size"] == 2 and ck["step"] == 2 and len(ck["rng"]) == 2
    assert (out / "encoder.safetensors").is_file()
