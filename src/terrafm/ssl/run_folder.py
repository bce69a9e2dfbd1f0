"""The folder of a pretraining run (``train.output_dir``): the checks before a run starts and the
outputs written when it ends (docs/pretraining.md, "Outputs").

A run folder holds ``checkpoint.pt`` (:mod:`terrafm.ssl.checkpointing`), ``config.yaml`` (the
resolved config), ``metrics.jsonl``, ``loss_curve.png``, ``diagnostics.png`` and
``encoder.safetensors`` (the teacher backbone, loadable with ``terrafm.models.load_model``).
"""

from __future__ import annotations

from pathlib import Path

from terrafm.config import PretrainConfig
from terrafm.errors import ConfigError, OutputError
from terrafm.outputs import check_writable, remove_stale_temps
from terrafm.ssl.checkpointing import CHECKPOINT_NAME
from terrafm.ssl.distributed import DistInfo
from terrafm.ssl.export import export_encoder
from terrafm.ssl.heads import MultiCropModel
from terrafm.ssl.metrics import plot_diagnostics, plot_loss_curve

__all__ = ["RUN_FILES", "ResumeError", "RunExistsError", "check_run_folder", "write_final_outputs"]

# What a run writes into train.output_dir (their stale temporaries are removed on start).
RUN_FILES = (
    CHECKPOINT_NAME,
    "config.yaml",
    "metrics.jsonl",
    "loss_curve.png",
    "encoder.safetensors",
)


class RunExistsError(OutputError, FileExistsError):
    """``train.output_dir`` holds a run's checkpoint and ``--resume`` was not given (a usage error)."""

    exit_code = 2


class ResumeError(ConfigError):
    """``--resume`` into a folder without a checkpoint."""


def check_run_folder(cfg: PretrainConfig, resume: bool, is_main: bool = True) -> None:
    """Before any data is read or step taken: the folder is writable, ``resume`` matches what is
    there, and (main process) the temporaries of a killed run are removed.

    Raises:
        RunExistsError: a checkpoint exists and ``resume`` is False.
        ResumeError: ``resume`` but no checkpoint to continue.
        OutputError: the folder cannot be written (read-only, permission, a file in the way).
    """
    out = Path(cfg.train.output_dir)
    ckpt = out / CHECKPOINT_NAME
    if not resume and ckpt.exists():
        raise RunExistsError(
            f"{ckpt} exists: pass --resume to continue it, or choose another train.output_dir"
        )
    if resume and not ckpt.is_file():
        raise ResumeError(
            f"{ckpt}: no checkpoint to resume in train.output_dir={out} "
            "(run without --resume to start)"
        )
    check_writable(out, "train.output_dir", folder=True)
    if is_main:
        remove_stale_temps(out / name for name in RUN_FILES)


def write_final_outputs(
    teacher: MultiCropModel, cfg: PretrainConfig, step: int, info: DistInfo
) -> Path:
    """The teacher backbone as ``encoder.safetensors`` (collective) and, on the main process,
    the loss-curve and diagnostics plots of ``metrics.jsonl``; returns the encoder's path."""
    out = Path(cfg.train.output_dir)
    encoder = export_encoder(
        teacher,
        cfg.model.name,
        out / "encoder.safetensors",
        extra={"pretrain_step": step},
        is_main=info.is_main,
    )
    if info.is_main:
        plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
        plot_diagnostics(out / "metrics.jsonl", out / "diagnostics.png", cfg.model.name)
    return encoder
