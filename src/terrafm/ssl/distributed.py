"""Process groups and model wrapping for ``torchrun`` launches (docs/design.md, "Objective" scale-out).

A plain ``python``/``terrafm`` launch is a single process and touches no collective. Under
``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) the process group is created
with NCCL on CUDA and gloo on CPU. The student is wrapped in DDP, or sharded with FSDP2
(``torch.distributed.fsdp.fully_shard``) per transformer block for models too large to replicate.
Every collective in the package is guarded by ``dist.is_initialized()``.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import signal
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "StopSignal",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup",
    "init_distributed",
    "release_meshes",
    "shard_fsdp",
    "unwrap",
    "wrap_ddp",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if preference == "cuda":
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device("cpu")


def init_distributed(
    device: str = "auto", env: Mapping[str, str] | None = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Join the ``torchrun`` job described by the launcher's environment, if any.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        env: the launcher variables (defaults to ``os.environ``).
        timeout_s: collective timeout.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if dev.type == "cuda" else None,
        )
        log.info("rank %d/%d joined (%s on %s)", rank, world, backend, dev)
    return DistInfo(rank, world, local_rank, dev)


# The device meshes shard_fsdp created, to check that leaving the job really frees them.
_MESHES: list[weakref.ref[Any]] = []


def _clear_dtensor_caches() -> None:
    """Empty DTensor's process-wide caches: sharding propagation (Python and C++), redistribution
    plans and transforms, mesh topology. Their entries hold device meshes, and a mesh holds its
    process groups (docs/pretraining.md, "Leaving the job"). A cache a torch version lacks is
    skipped."""
    from torch.distributed.tensor import _collective_utils, _redistribute, _sharding_prop, debug

    clears = [
        getattr(debug, "_clear_sharding_prop_cache", None),
        getattr(_redistribute, "clear_redistribute_planner_cache", None),
        getattr(getattr(_redistribute, "_gen_transform_infos", None), "cache_clear", None),
        getattr(
            getattr(_sharding_prop.ShardingPropagator, "_propagate_tensor_meta_cached", None),
            "cache_clear",
            None,
        ),
        getattr(
            getattr(getattr(_collective_utils, "MeshTopoInfo", None), "build_from_mesh", None),
            "cache_clear",
            None,
        ),
    ]
    for clear in clears:
        if callable(clear):
            clear()


def release_meshes() -> int:
    """Free the device meshes of :func:`shard_fsdp` (and with them their references to the process
    group); returns how many are still alive (0 unless something outside this package holds one).

    Call it once the sharded models are no longer referenced, before ``destroy_process_group``:
    a gloo or NCCL backend is only shut down (its threads joined) when its last reference goes.
    """
    if not _MESHES:
        return 0
    _clear_dtensor_caches()
    gc.collect()  # FSDP2's module state is cyclic: the models and their meshes go now
    alive = sum(r() is not None for r in _MESHES)
    _MESHES.clear()
    if alive:
        log.warning(
            "%d FSDP device mesh(es) still referenced after the run: the process group outlives "
            "destroy_process_group and is torn down at interpreter exit",
            alive,
        )
    return alive


def cleanup() -> None:
    """Leave the process group (no-op for a single process): free the FSDP meshes first, so that
    destroying the group joins its backend's threads now, while the interpreter is alive."""
    if dist.is_available() and dist.is_initialized():
        release_meshes()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity for one process); returns ``t``."""
    if _active():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` for one process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around ``module`` when distributed, else the module itself.

    ``find_unused_parameters`` is on because a step may not use every sensor stem or the fusion
    parameters (a view with a single sensor skips the fusion attention).
    """
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def shard_fsdp(
    module: nn.Module, block_lists: list[nn.ModuleList], reshard: bool = True
) -> nn.Module:
    """Shard ``module`` with FSDP2: each transformer block, then the root.

    Args:
        module: the model (student or teacher) already on its device.
        block_lists: the block containers whose children become their own shards.
        reshard: free the gathered parameters after forward (saves memory, costs a re-gather).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = next(module.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))  # over the default group
    _MESHES.append(weakref.ref(mesh))
    for blocks in block_lists:
        for blk in blocks:
            fully_shard(blk, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 modules are not wrapped)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, nn.Module) else module


class StopSignal:
    """Records SIGTERM so the loop can checkpoint and exit between steps (a context manager that
    installs the handler and restores the previous one)."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> StopSignal:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler possible
            self._old = None
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def any_rank(self) -> bool:
        """Whether any process of the job received SIGTERM (collective under torchrun)."""
        if not _active():
            return self.hit
        return bool(all_reduce_sum(torch.tensor([float(self.hit)])).item() > 0)
