"""The pretraining loop, to read top to bottom (docs/design.md, "Objective"; docs/pretraining.md).

``pretrain(cfg)`` is what ``terrafm pretrain`` calls: it joins the ``torchrun`` job if there is
one and runs :func:`train`. :func:`train` is the whole recipe in order:

1. setup: the set H, the schedules, student / teacher / head / loss / optimiser
   (:mod:`terrafm.ssl.build`), and on ``resume`` the checkpoint (:mod:`terrafm.ssl.checkpointing`);
2. the loop: a batch of the :class:`BatchSource` -> one step (:func:`terrafm.ssl.step.train_step`:
   forward, loss, backward, AdamW with this step's lr / wd, EMA teacher with this step's
   momentum, centre update) -> log (:mod:`terrafm.ssl.metrics`) -> checkpoint every
   ``train.checkpoint_every`` steps and on SIGTERM;
3. the end: a last checkpoint, ``encoder.safetensors`` and the plots (:mod:`terrafm.ssl.run_folder`).

``resume=True`` continues from ``train.output_dir/checkpoint.pt`` exactly (same weights as an
uninterrupted run). Process groups, DDP / FSDP2 wrapping and the SIGTERM flag are in
:mod:`terrafm.ssl.distributed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist

from terrafm.config import PretrainConfig, save_config
from terrafm.data.photometric import PhotometricJitter
from terrafm.errors import TerraFMError
from terrafm.ssl.batch import check_batch
from terrafm.ssl.build import TrainingObjects, build_training, high_freq_set, schedules_for
from terrafm.ssl.checkpointing import (
    CHECKPOINT_NAME,
    RESUMABLE_CHANGES,
    RunCounters,
    resume_run,
    save_run,
)
from terrafm.ssl.distributed import (
    DistInfo,
    StopSignal,
    barrier,
    cleanup,
    init_distributed,
    release_meshes,
    unwrap,
)
from terrafm.ssl.heads import MultiCropModel
from terrafm.ssl.metrics import MetricsLog, Progress, RankMeProbe, step_record
from terrafm.ssl.run_folder import (
    RUN_FILES,
    ResumeError,
    RunExistsError,
    check_run_folder,
    write_final_outputs,
)
from terrafm.ssl.step import to_device, train_step

__all__ = [
    "RESUMABLE_CHANGES",
    "RUN_FILES",
    "BatchSource",
    "NonFiniteLossError",
    "PretrainResult",
    "ResumeError",
    "RunExistsError",
    "TrainingObjects",
    "build_training",
    "check_run_folder",
    "epoch_batches",
    "pretrain",
    "train",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(TerraFMError, RuntimeError):
    """Too many consecutive non-finite steps: the run stopped."""


class BatchSource(Protocol):
    """Where training batches come from (the real Major-TOM loader or a test generator)."""

    @property
    def steps_per_epoch(self) -> int: ...

    @property
    def landcover_counts(self) -> Mapping[int, int]:
        """Training-set count of each dominant land-cover class (for the set H)."""
        ...

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        """The batches of ``epoch`` from batch index ``start`` on (deterministic per seed)."""
        ...


@dataclass
class PretrainResult:
    """Where a run ended and what it wrote."""

    output_dir: Path
    step: int
    stopped: str  # "done" | "max_steps" | "signal"
    checkpoint: Path
    encoder: Path | None
    metrics: Path
    nonfinite_total: int


def epoch_batches(source: BatchSource, step: int, end: int) -> Iterator[dict[str, Any]]:
    """The batches of global steps ``step`` .. ``end - 1``, epoch after epoch; a run resumed
    mid-epoch continues that epoch at its batch index."""
    spe = source.steps_per_epoch
    while step < end:
        epoch, start = divmod(step, spe)
        got = 0
        for batch in source.batches(epoch, start):
            got += 1
            yield batch
            step += 1
            if step >= end or step % spe == 0:
                break
        if got == 0:
            raise RuntimeError(f"the data source yielded no batch for epoch {epoch} from {start}")


def train(cfg: PretrainConfig, info: DistInfo, source: BatchSource, resume: bool) -> PretrainResult:
    """Run (or resume) the configured pretraining in this process of the job."""
    # ---------------------------------------------------------------- setup
    check_run_folder(cfg, resume, info.is_main)
    out = Path(cfg.train.output_dir)
    ckpt = out / CHECKPOINT_NAME
    spe = source.steps_per_epoch
    if spe <= 0:
        raise ValueError("the data source yields no batch per epoch (is the dataset empty?)")
    high_freq = high_freq_set(cfg, source.landcover_counts)
    sched = schedules_for(cfg, spe, info.world_size)
    objs = build_training(cfg, info, high_freq)
    at = resume_run(ckpt, objs, source, cfg, info) if resume else RunCounters()
    saved_at = at.step if resume else -1

    def checkpoint() -> int:
        save_run(ckpt, objs, source, cfg, at, steps_per_epoch=spe, high_freq=high_freq, info=info)
        return at.step

    if info.is_main:
        save_config(cfg, out / "config.yaml")
    end = sched.total_steps
    if cfg.train.max_steps is not None:
        end = min(end, cfg.train.max_steps)
    log.info(
        "pretraining %s: %d steps/epoch, steps %d -> %d of %d, H=%s, world=%d on %s",
        cfg.model.name, spe, at.step, end, sched.total_steps, high_freq, info.world_size,
        info.device,
    )  # fmt: skip
    metrics = out / "metrics.jsonl"
    mlog = MetricsLog(metrics, resume_step=at.step if resume else None) if info.is_main else None
    probe = RankMeProbe(_rankme_every(cfg, info), info.device)
    jitter = PhotometricJitter(cfg.data.photometric, cfg.train.seed)
    images = cfg.data.batch_size * info.world_size
    streak = 0  # consecutive non-finite steps
    signalled = False

    # ---------------------------------------------------------------- loop
    try:
        with (
            StopSignal() as stop,
            Progress(end, at.step, info.is_main and cfg.train.progress) as bar,
        ):
            t0 = time.perf_counter()
            for batch in epoch_batches(source, at.step, end):
                probe.keep(batch)
                check_batch(batch)
                hp = sched.at(at.step)
                on_device = jitter(to_device(batch, info.device), at.step, info.rank)
                res = train_step(
                    objs.student,
                    objs.teacher,
                    objs.loss,
                    objs.optimizer,
                    on_device,
                    hp,
                    freeze_last_layer=at.step < sched.freeze_last_layer_steps,
                    clip_grad=cfg.optim.clip_grad,
                    amp=cfg.train.amp,
                    device=info.device,
                    extras=objs.extras,
                )
                dt, t0 = time.perf_counter() - t0, time.perf_counter()
                streak = streak + 1 if res.skipped else 0
                at.nonfinite_total += int(res.skipped)
                rec = step_record(
                    res,
                    hp,
                    step=at.step + 1,
                    epoch=at.step // spe,
                    out_dim=cfg.head.out_dim,
                    images_per_s=images / max(dt, 1e-9),
                    nonfinite_total=at.nonfinite_total,
                )
                at.step += 1

                # log
                probed = probe.due(at.step)
                if probed:
                    rec.update(
                        probe.measure(objs.teacher, cast(MultiCropModel, unwrap(objs.student)))
                    )
                bar.update(res.loss, rec["images_per_s"], at.nonfinite_total)
                if mlog is not None and (
                    res.skipped or probed or at.step % cfg.train.log_every == 0 or at.step == end
                ):
                    mlog.write(rec)
                if res.skipped:
                    log.warning("step %d: non-finite loss/gradient, step skipped", at.step)
                    if streak >= cfg.train.max_nonfinite:
                        raise _nonfinite_stop(at, streak, ckpt, saved_at)

                # checkpoint
                if stop.any_rank():
                    saved_at = checkpoint()
                    log.warning("SIGTERM: wrote %s at step %d, exiting", ckpt, at.step)
                    signalled = True
                    break
                if at.step % cfg.train.checkpoint_every == 0 and streak == 0:
                    saved_at = checkpoint()
    finally:
        if mlog is not None:
            mlog.close()

    # ---------------------------------------------------------------- end
    if saved_at != at.step:
        checkpoint()
    encoder = None if signalled else write_final_outputs(objs.teacher, cfg, at.step, info)
    stopped = "signal" if signalled else "done" if end == sched.total_steps else "max_steps"
    return PretrainResult(out, at.step, stopped, ckpt, encoder, metrics, at.nonfinite_total)


def _rankme_every(cfg: PretrainConfig, info: DistInfo) -> int:
    """Steps between RankMe probes on this process (the main one; never under FSDP)."""
    every = cfg.train.rankme_every if info.is_main else 0
    if every and cfg.train.strategy == "fsdp" and info.distributed:
        log.warning("train.rankme_every: RankMe probes are not run under FSDP (sharded weights)")
        every = 0
    return every


def _nonfinite_stop(at: RunCounters, streak: int, ckpt: Path, saved_at: int) -> NonFiniteLossError:
    where = (
        f"the last good checkpoint {ckpt} (step {saved_at}) is intact"
        if saved_at >= 0
        else "no checkpoint had been written yet"
    )
    return NonFiniteLossError(
        f"stopped at step {at.step}: {streak} consecutive non-finite losses or "
        f"gradients ({at.nonfinite_total} in total); {where}. Check the input data, lower "
        "optim.lr, or set train.amp=false."
    )


def pretrain(
    cfg: PretrainConfig, source: BatchSource | None = None, resume: bool = False
) -> PretrainResult:
    """Run (or resume) pretraining as configured.

    Args:
        cfg: the resolved config.
        source: batches to train on; built from ``cfg.data`` (Major-TOM) when None.
        resume: continue from ``<output_dir>/checkpoint.pt``.

    Raises:
        NonFiniteLossError: ``train.max_nonfinite`` consecutive non-finite steps.
        RunExistsError: a checkpoint exists and ``resume`` is False (a FileExistsError).
        ResumeError: ``resume`` but no checkpoint in ``train.output_dir``.
        OutputError: ``train.output_dir`` cannot be written.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.train.device)
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        check_run_folder(cfg, resume, is_main=False)  # before the data source is built
        if source is None:
            from terrafm.ssl.data import build_source

            source = build_source(cfg, info)
        result = train(cfg, info, source, resume)
        # No rank leaves while another may still have collective work in flight (FSDP2 issues
        # its all-gathers asynchronously): a gloo peer that disappears mid-collective aborts the
        # other rank.
        barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        # FSDP2's device meshes hold the process group (through DTensor's caches): free them, so
        # that destroying the group (here, or by the caller who created it) joins gloo's threads
        # now and not during interpreter shutdown, where it can abort the process (SIGABRT).
        release_meshes()
        if owns_group:
            cleanup()
