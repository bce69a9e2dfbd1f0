"""Training-state checkpoints for exact resume (docs/design.md, "Objective" scale-out).

One file, ``<output_dir>/checkpoint.pt``, holds the student (backbone + head), the teacher, the
optimiser, the loss centres, the step, every rank's RNG states, the data position and the resolved
config. It is written by rank 0 through :func:`terrafm.outputs.atomic_write` (temporary file +
rename), so a killed process leaves either the previous checkpoint or the new one, never a
truncated file. It contains only tensors, numbers, strings, lists and dicts and is read back with
``torch.load(weights_only=True)``: loading a checkpoint runs no pickled code.

Model and optimiser states go through ``torch.distributed.checkpoint.state_dict``, which gathers
full tensors from FSDP2 shards and strips DDP wrappers, so the same file resumes any strategy.

:func:`save_run` / :func:`resume_run` are the two calls the training loop makes: they add the
run's counters, the data source's state and the optional patch-loss centres, and on resume check
that the config and the number of processes match (:data:`RESUMABLE_CHANGES` may differ).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from terrafm.config import PretrainConfig, config_diff, from_dict, to_dict, upgrade_moved
from terrafm.outputs import atomic_write
from terrafm.ssl.build import TrainingObjects
from terrafm.ssl.distributed import DistInfo, all_gather_object, barrier
from terrafm.weights.checkpoint import CheckpointError

__all__ = [
    "CHECKPOINT_NAME",
    "RESUMABLE_CHANGES",
    "RunCounters",
    "capture_rng",
    "check_resume_config",
    "load_training_state",
    "restore_rng",
    "restore_training_state",
    "resume_run",
    "save_run",
    "save_training_state",
]

log = logging.getLogger(__name__)

# Keys that may change between a run and its resume without breaking exactness.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.max_nonfinite",
    "train.threads",
    "train.rankme_every",
    "data.num_workers",
    "data.pin_memory",
    "data.root",  # the data may move; its content and order must not change
    "data.shards",  # the store may move too
)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "terrafm-pretrain/1"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
# Parameters that never received a gradient (e.g. the stem of a sensor absent from the data so
# far) have no AdamW state yet: loading must accept that.
_FULL_LENIENT = StateDictOptions(full_state_dict=True, cpu_offload=True, strict=False)


def capture_rng() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and CUDA) RNG states as plain data."""
    py = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (the global stream is what we restore)
    assert isinstance(np_state, tuple)
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_training_state(
    path: str | Path,
    *,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    extra: dict[str, Any],
    is_main: bool,
) -> Path:
    """Write the training state (collective: every rank must call it; rank 0 writes).

    Args:
        path: checkpoint file.
        student: student model (plain, DDP or FSDP2).
        teacher: teacher model.
        optimizer: the student's optimiser.
        loss_fn: the loss holding the centre buffers.
        extra: step, data position, config, counters (plain data).
        is_main: whether this process writes.
    """
    path = Path(path)
    student_sd = get_model_state_dict(student, options=_FULL)
    teacher_sd = get_model_state_dict(teacher, options=_FULL)
    optim_sd = get_optimizer_state_dict(student, optimizer, options=_FULL)
    rng = all_gather_object(capture_rng())
    if is_main:
        payload = {
            "format": FORMAT,
            "student": student_sd,
            "teacher": teacher_sd,
            "optimizer": optim_sd,
            "loss": {k: v.detach().cpu().clone() for k, v in loss_fn.state_dict().items()},
            "rng": rng,
            **extra,
        }
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a terrafm pretraining checkpoint")
    return payload


def _drop_fresh_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> None:
    """Forget optimiser state that loading invented for parameters the checkpoint had none for.

    ``set_optimizer_state_dict`` initialises every parameter's state with a zero-gradient step;
    a parameter that had never been updated would then resume with AdamW step 1 instead of 0.
    """
    known = set(saved.get("state", {}))
    inner = getattr(model, "module", model)
    for name, p in inner.named_parameters():
        if name not in known and p in optimizer.state:
            del optimizer.state[p]


def restore_training_state(
    payload: dict[str, Any],
    *,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    rank: int,
) -> None:
    """Load models, optimiser, centres and this rank's RNG states from a checkpoint payload.

    Raises:
        CheckpointError: the checkpoint was written by a job with a different number of ranks.
    """
    rngs = payload["rng"]
    if rank >= len(rngs):
        raise CheckpointError(
            f"checkpoint was written by {len(rngs)} process(es); cannot resume rank {rank} "
            "(resume with the same number of processes)"
        )
    set_model_state_dict(student, payload["student"], options=_FULL)
    set_model_state_dict(teacher, payload["teacher"], options=_FULL)
    set_optimizer_state_dict(student, optimizer, payload["optimizer"], options=_FULL_LENIENT)
    _drop_fresh_optimizer_state(student, optimizer, payload["optimizer"])
    loss_fn.load_state_dict(payload["loss"])
    restore_rng(rngs[rank])


@dataclass
class RunCounters:
    """Where a run stands: optimisation steps taken and non-finite steps skipped in total."""

    step: int = 0
    nonfinite_total: int = 0


def check_resume_config(saved: Mapping[str, Any], cfg: PretrainConfig, path: str | Path) -> None:
    """Refuse to resume with a config that differs from the checkpoint's in a key outside
    :data:`RESUMABLE_CHANGES` (keys added since the checkpoint take their defaults, keys of the
    older flat ``data`` layout are read at their new place)."""
    try:
        saved = to_dict(from_dict(PretrainConfig, upgrade_moved(PretrainConfig, saved)))
    except ValueError:
        pass  # compared as written: the diff names what differs
    diff = [k for k in config_diff(saved, to_dict(cfg)) if k not in RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"{path}: cannot resume with a different config; changed key(s): {diff} "
            f"(only {list(RESUMABLE_CHANGES)} may change on resume)"
        )


def save_run(
    path: Path,
    objs: TrainingObjects,
    source: Any,
    cfg: PretrainConfig,
    counters: RunCounters,
    *,
    steps_per_epoch: int,
    high_freq: list[int],
    info: DistInfo,
) -> None:
    """Checkpoint a run (collective: every rank calls it, rank 0 writes; returns after all have)."""
    step = counters.step
    extra: dict[str, Any] = {
        "step": step,
        "data": {"epoch": step // steps_per_epoch, "batch": step % steps_per_epoch},
        "config": to_dict(cfg),
        "high_freq_classes": high_freq,
        "nonfinite_total": counters.nonfinite_total,
        "world_size": info.world_size,
    }
    source_state = getattr(source, "state_dict", None)
    if callable(source_state):
        extra["source"] = source_state()
    if objs.extras is not None and objs.extras.patch_loss is not None:
        extra["patch_loss"] = {
            k: v.detach().cpu().clone() for k, v in objs.extras.patch_loss.state_dict().items()
        }
    save_training_state(
        path,
        student=objs.student,
        teacher=objs.teacher,
        optimizer=objs.optimizer,
        loss_fn=objs.loss,
        extra=extra,
        is_main=info.is_main,
    )
    barrier()


def resume_run(
    path: Path, objs: TrainingObjects, source: Any, cfg: PretrainConfig, info: DistInfo
) -> RunCounters:
    """Restore a run from its checkpoint into ``objs`` and ``source``; the counters it reached.

    Raises:
        ValueError: the config differs beyond :data:`RESUMABLE_CHANGES`, or the checkpoint was
            written by another number of processes.
    """
    payload = load_training_state(path)
    check_resume_config(payload["config"], cfg, path)
    if int(payload.get("world_size", 1)) != info.world_size:
        raise ValueError(
            f"{path}: written by {payload.get('world_size')} process(es); resume with "
            f"the same number (now {info.world_size})"
        )
    restore_training_state(
        payload,
        student=objs.student,
        teacher=objs.teacher,
        optimizer=objs.optimizer,
        loss_fn=objs.loss,
        rank=info.rank,
    )
    if objs.extras is not None and objs.extras.patch_loss is not None:
        objs.extras.patch_loss.load_state_dict(payload["patch_loss"])
    load_source = getattr(source, "load_state_dict", None)
    if callable(load_source) and "source" in payload:
        load_source(payload["source"])
    counters = RunCounters(int(payload["step"]), int(payload.get("nonfinite_total", 0)))
    log.info("resumed %s at step %d", path, counters.step)
    return counters
