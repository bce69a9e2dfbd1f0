"""Training-state checkpoints for exact resume (docs/design.md, "Objective" scale-out).

One file, ``<output_dir>/checkpoint.pt``, holds the student (backbone + head), the teacher, the
optimiser, the loss centres, the step, every rank's RNG states, the data position and the resolved
config. It is written by rank 0 through :func:`terrafm.outputs.atomic_write` (temporary file +
rename), so a killed process leaves either the previous checkpoint or the new one, never a
truncated file. It contains only tensors, numbers, strings, lists and dicts and is read back with
``torch.load(weights_only=True)``: loading a checkpoint runs no pickled code.

Model and optimiser states go through ``torch.distributed.checkpoint.state_dict``, which gathers
full tensors from FSDP2 shards and strips DDP wrappers, so the same file resumes any strategy.
"""

from __future__ import annotations

import random
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

from terrafm.outputs import atomic_write
from terrafm.ssl.distributed import all_gather_object
from terrafm.weights.checkpoint import CheckpointError

__all__ = [
    "CHECKPOINT_NAME",
    "capture_rng",
    "load_training_state",
    "restore_rng",
    "restore_training_state",
    "save_training_state",
]

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
