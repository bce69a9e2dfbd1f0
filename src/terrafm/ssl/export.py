"""Encoder weights out of a pretraining run, written by :mod:`terrafm.weights.export`.

The teacher backbone (DINO's evaluated network) is written as a published-layout ``.pth`` and as a
terrafm ``.safetensors`` whose metadata carries the model name, config, sensors and normalisation
statistics (docs/design.md, "Weights"). What is specific to training lives here: reading the
training checkpoint, and gathering a live (possibly FSDP-sharded) teacher's full state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from terrafm.models import TerraFM, create_model
from terrafm.outputs import check_writable, refuse_existing
from terrafm.weights.checkpoint import save_weights
from terrafm.weights.export import load_backbone, write_release

__all__ = ["backbone_from_state", "export_encoder", "export_run"]


def backbone_from_state(state: Mapping[str, torch.Tensor], model_name: str) -> TerraFM:
    """A CPU TerraFM holding the ``backbone.*`` weights of a student/teacher state dict."""
    return load_backbone(create_model(model_name), state, model_name)


def export_encoder(
    teacher: nn.Module,
    model_name: str,
    path: str | Path,
    extra: Mapping[str, object] | None = None,
    is_main: bool = True,
) -> Path:
    """Write a live teacher's backbone as ``.safetensors`` (collective under FSDP; rank 0 writes)."""
    state = get_model_state_dict(
        teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    path = Path(path)
    if is_main:
        model = backbone_from_state(state, model_name)  # type: ignore[arg-type]
        save_weights(model, path, model_name, extra=dict(extra or {}))
    return path


def export_run(
    checkpoint: str | Path, out: str | Path, which: str = "teacher", overwrite: bool = True
) -> tuple[Path, Path]:
    """Export a training checkpoint's encoder as ``<out>.pth`` and ``<out>.safetensors``.

    Args:
        checkpoint: a ``checkpoint.pt`` or the run folder holding it.
        out: output path without suffix (a suffix, if given, is replaced).
        which: ``teacher`` (default, as DINO evaluates) or ``student``.
        overwrite: replace existing files (False: an existing one is an OutputError).
    """
    from terrafm.ssl.checkpointing import CHECKPOINT_NAME, load_training_state

    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT_NAME
    payload = load_training_state(checkpoint)
    cfg: dict[str, Any] = payload["config"]
    name = str(cfg["model"]["name"])
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".pth", ".safetensors") else out
    targets = [stem.with_name(stem.name + s) for s in (".pth", ".safetensors")]
    if not overwrite:
        refuse_existing(("--out", t) for t in targets)
    for t in targets:
        check_writable(t, "--out")
    meta = {
        "pretrain_step": int(payload["step"]),
        "weights": which,
        "source_checkpoint": str(checkpoint),
        "pretrain_config": cfg,
    }
    return write_release(backbone_from_state(payload[which], name), out, name, extra=meta)
