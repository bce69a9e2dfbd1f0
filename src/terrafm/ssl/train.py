"""The pretraining loop: builds everything from a :class:`PretrainConfig` and runs it (docs/design.md, "Objective").

``pretrain(cfg)`` is what ``terrafm pretrain`` calls. It joins the ``torchrun`` job if there is
one, builds student / teacher / head / loss / optimiser / schedules, and iterates a
:class:`BatchSource` of contract-B batches. Checkpoints (``checkpoint.pt``) are written every
``train.checkpoint_every`` steps, at the end, and when SIGTERM arrives; ``resume=True`` continues
from the checkpoint in ``train.output_dir`` exactly (same weights as an uninterrupted run).
The run folder also receives ``config.yaml`` (resolved), ``metrics.jsonl``, ``loss_curve.png`` and
``encoder.safetensors`` (the teacher backbone, loadable with ``terrafm.models.load_model``).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from terrafm.config import PretrainConfig, config_diff, from_dict, save_config, to_dict
from terrafm.errors import ConfigError, OutputError, TerraFMError
from terrafm.models import create_model
from terrafm.outputs import check_writable, remove_stale_temps
from terrafm.ssl.batch import check_batch
from terrafm.ssl.checkpointing import (
    CHECKPOINT_NAME,
    load_training_state,
    restore_training_state,
    save_training_state,
)
from terrafm.ssl.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    release_meshes,
    shard_fsdp,
    unwrap,
    wrap_ddp,
)
from terrafm.ssl.export import export_encoder
from terrafm.ssl.heads import DINOHead, MultiCropModel
from terrafm.ssl.loss import DualCenteredDINOLoss, PatchDistillationLoss, high_frequency_classes
from terrafm.ssl.metrics import MetricsLog, plot_diagnostics, plot_loss_curve, probe_rankme
from terrafm.ssl.schedules import Schedules
from terrafm.ssl.step import (
    Extras,
    StepResult,
    build_student_teacher,
    make_optimizer,
    to_device,
    train_step,
)

__all__ = [
    "BatchSource",
    "NonFiniteLossError",
    "PretrainResult",
    "TrainingObjects",
    "build_training",
    "pretrain",
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


class NonFiniteLossError(TerraFMError, RuntimeError):
    """Too many consecutive non-finite steps: the run stopped."""


class RunExistsError(OutputError, FileExistsError):
    """``train.output_dir`` holds a run's checkpoint and ``--resume`` was not given (a usage error)."""

    exit_code = 2


class ResumeError(ConfigError):
    """``--resume`` into a folder without a checkpoint."""


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


class _SignalFlag:
    """Records SIGTERM so the loop can checkpoint and exit between steps."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> _SignalFlag:
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
        if not (dist.is_available() and dist.is_initialized()):
            return self.hit
        return bool(all_reduce_sum(torch.tensor([float(self.hit)])).item() > 0)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seed the global stream any library may use)
    torch.manual_seed(seed)


@dataclass
class TrainingObjects:
    """What a training step needs: the (wrapped) student, the teacher, optimiser and loss."""

    student: torch.nn.Module
    teacher: MultiCropModel
    optimizer: torch.optim.Optimizer
    loss: DualCenteredDINOLoss
    extras: Extras | None = None  # masked patch distillation / KoLeo, when a config turns them on


def build_training(cfg: PretrainConfig, info: DistInfo, high_freq: list[int]) -> TrainingObjects:
    """Student / teacher / head / optimiser / loss of ``cfg`` on ``info.device``, wrapped for
    the job (DDP, or FSDP2 with ``train.strategy=fsdp``); identical initial weights on all ranks.
    """
    _seed_all(cfg.train.seed)  # identical initial weights on every rank
    backbone = create_model(
        cfg.model.name, pretrained=cfg.model.pretrained, drop_path_rate=cfg.model.drop_path_rate
    )
    h = cfg.head
    head = DINOHead(
        backbone.embed_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer
    )
    ib = cfg.loss.ibot
    patch_dim = h.out_dim if ib.shared_head or ib.out_dim is None else ib.out_dim
    patch_head = None
    if ib.enabled and not ib.shared_head:
        patch_head = DINOHead(
            backbone.embed_dim, patch_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers,
            h.norm_last_layer,
        )  # fmt: skip
    fsdp = cfg.train.strategy == "fsdp" and info.distributed
    group = cfg.train.group_by_sensors
    if group and fsdp:
        raise ValueError("train.group_by_sensors=true cannot be used with train.strategy=fsdp")
    group = info.device.type == "cpu" and not fsdp if group is None else group
    student, teacher = build_student_teacher(backbone, head, group, patch_head, ib.enabled)
    student.to(info.device)
    teacher.to(info.device)
    wrapped: torch.nn.Module
    if fsdp:
        wrapped = shard_fsdp(student, [student.backbone.blocks])
        shard_fsdp(teacher, [teacher.backbone.blocks])
    else:
        wrapped = wrap_ddp(student, info)
    optimizer = make_optimizer(student, tuple(cfg.optim.betas))  # type: ignore[arg-type]
    loss_fn = DualCenteredDINOLoss(
        h.out_dim,
        high_freq,
        alpha=cfg.loss.alpha,
        center_momentum=cfg.loss.center_momentum,
        student_temp=cfg.loss.student_temp,
        dual=cfg.loss.dual_centering,
        same_crop_pairs=cfg.loss.same_crop_pairs,
    ).to(info.device)
    extras = None
    if ib.enabled or cfg.loss.koleo_weight > 0:
        patch_loss = None
        if ib.enabled:
            patch_loss = PatchDistillationLoss(
                patch_dim,
                high_freq,
                alpha=cfg.loss.alpha,
                center_momentum=ib.center_momentum,
                student_temp=cfg.loss.student_temp,
                dual=cfg.loss.dual_centering,
            ).to(info.device)
        extras = Extras(
            patch_loss=patch_loss,
            patch_weight=ib.weight,
            mask_ratio=ib.mask_ratio,
            mask_prob=ib.mask_prob,
            mask_mode=ib.mask_mode,
            koleo_weight=cfg.loss.koleo_weight,
        )
    _seed_all(cfg.train.seed + 1000 * info.rank + 1)  # per-rank stream for drop path etc.
    return TrainingObjects(wrapped, teacher, optimizer, loss_fn, extras)


def _schedules(cfg: PretrainConfig, steps_per_epoch: int, world: int) -> Schedules:
    o, lc = cfg.optim, cfg.loss
    lr = o.lr * (cfg.data.batch_size * world / 256.0 if o.scale_lr_with_batch else 1.0)
    return Schedules.build(
        epochs=o.epochs,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        min_lr=o.min_lr,
        warmup_epochs=o.warmup_epochs,
        weight_decay=o.weight_decay,
        weight_decay_end=o.weight_decay_end,
        momentum=o.momentum_teacher,
        momentum_end=o.momentum_teacher_end,
        warmup_teacher_temp=lc.warmup_teacher_temp,
        teacher_temp=lc.teacher_temp,
        warmup_teacher_temp_epochs=lc.warmup_teacher_temp_epochs,
        freeze_last_layer_epochs=o.freeze_last_layer_epochs,
    )


def _check_resume_config(saved: Mapping[str, Any], cfg: PretrainConfig, path: Path) -> None:
    try:  # fill keys added since the checkpoint was written with their defaults
        saved = to_dict(from_dict(PretrainConfig, saved))
    except ValueError:
        pass  # compared as written: the diff names what differs
    diff = [k for k in config_diff(saved, to_dict(cfg)) if k not in RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"{path}: cannot resume with a different config; changed key(s): {diff} "
            f"(only {list(RESUMABLE_CHANGES)} may change on resume)"
        )


def _high_freq(cfg: PretrainConfig, source: BatchSource) -> list[int]:
    if cfg.loss.high_freq_classes is not None:
        return sorted(cfg.loss.high_freq_classes)
    counts = dict(source.landcover_counts)
    hf = high_frequency_classes(counts)
    if cfg.loss.dual_centering and not hf:
        log.warning("no high-frequency land-cover class found (counts %s): c_h stays at 0", counts)
    return hf


class _Run:
    """State of one pretraining run (one process of it)."""

    def __init__(self, cfg: PretrainConfig, info: DistInfo, source: BatchSource):
        self.cfg, self.info, self.source = cfg, info, source
        self.out = Path(cfg.train.output_dir)
        self.ckpt = self.out / CHECKPOINT_NAME
        self.spe = source.steps_per_epoch
        if self.spe <= 0:
            raise ValueError("the data source yields no batch per epoch (is the dataset empty?)")
        self.high_freq = _high_freq(cfg, source)
        self.sched = _schedules(cfg, self.spe, info.world_size)
        self.objs = build_training(cfg, info, self.high_freq)
        self.step = 0
        self.nonfinite_total = 0
        self.streak = 0
        self.last_saved = -1

    # -------------------------------------------------------------- checkpoints
    def save(self) -> None:
        extra = {
            "step": self.step,
            "data": {"epoch": self.step // self.spe, "batch": self.step % self.spe},
            "config": to_dict(self.cfg),
            "high_freq_classes": self.high_freq,
            "nonfinite_total": self.nonfinite_total,
            "world_size": self.info.world_size,
        }
        source_state = getattr(self.source, "state_dict", None)
        if callable(source_state):
            extra["source"] = source_state()
        o = self.objs
        if o.extras is not None and o.extras.patch_loss is not None:
            extra["patch_loss"] = {
                k: v.detach().cpu().clone() for k, v in o.extras.patch_loss.state_dict().items()
            }
        save_training_state(
            self.ckpt,
            student=o.student,
            teacher=o.teacher,
            optimizer=o.optimizer,
            loss_fn=o.loss,
            extra=extra,
            is_main=self.info.is_main,
        )
        barrier()
        self.last_saved = self.step

    def resume(self) -> None:
        payload = load_training_state(self.ckpt)
        _check_resume_config(payload["config"], self.cfg, self.ckpt)
        if int(payload.get("world_size", 1)) != self.info.world_size:
            raise ValueError(
                f"{self.ckpt}: written by {payload.get('world_size')} process(es); resume with "
                f"the same number (now {self.info.world_size})"
            )
        o = self.objs
        restore_training_state(
            payload,
            student=o.student,
            teacher=o.teacher,
            optimizer=o.optimizer,
            loss_fn=o.loss,
            rank=self.info.rank,
        )
        if o.extras is not None and o.extras.patch_loss is not None:
            o.extras.patch_loss.load_state_dict(payload["patch_loss"])
        load_source = getattr(self.source, "load_state_dict", None)
        if callable(load_source) and "source" in payload:
            load_source(payload["source"])
        self.step = int(payload["step"])
        self.nonfinite_total = int(payload.get("nonfinite_total", 0))
        self.last_saved = self.step
        log.info("resumed %s at step %d", self.ckpt, self.step)

    # -------------------------------------------------------------- steps
    def one_step(self, batch: dict[str, Any]) -> StepResult:
        check_batch(batch)
        batch = to_device(batch, self.info.device)
        o = self.objs
        return train_step(
            o.student,
            o.teacher,
            o.loss,
            o.optimizer,
            batch,
            self.sched.at(self.step),
            freeze_last_layer=self.step < self.sched.freeze_last_layer_steps,
            clip_grad=self.cfg.optim.clip_grad,
            amp=self.cfg.train.amp,
            device=self.info.device,
            extras=o.extras,
        )

    def record(self, res: StepResult, dt: float) -> dict[str, Any]:
        hp = self.sched.at(self.step)
        images = self.cfg.data.batch_size * self.info.world_size
        return {
            "step": self.step + 1,
            "epoch": self.step // self.spe,
            "loss": res.loss,
            **hp,
            "teacher_entropy": res.teacher_entropy,
            "log_k": math.log(self.cfg.head.out_dim),
            "teacher_batch_entropy": res.teacher_batch_entropy,
            "kl": res.kl,
            "center_norm": res.center_norm,
            "center_h_norm": res.center_h_norm,
            "h_count": res.h_count,
            "grad_norm": res.grad_norm,
            "images_per_s": images / max(dt, 1e-9),
            "skipped": res.skipped,
            "nonfinite_total": self.nonfinite_total,
            **{
                k: getattr(res, k)
                for k in (
                    "cls_loss",
                    "patch_loss",
                    "patch_kl",
                    "patch_teacher_entropy",
                    "patch_center_norm",
                    "patch_center_h_norm",
                    "masked_patches",
                    "koleo",
                )
                if getattr(res, k) is not None
            },
        }

    def nonfinite_stop(self) -> NonFiniteLossError:
        where = (
            f"the last good checkpoint {self.ckpt} (step {self.last_saved}) is intact"
            if self.last_saved >= 0
            else "no checkpoint had been written yet"
        )
        return NonFiniteLossError(
            f"stopped at step {self.step}: {self.streak} consecutive non-finite losses or "
            f"gradients ({self.nonfinite_total} in total); {where}. Check the input data, lower "
            "optim.lr, or set train.amp=false."
        )


def _iterate(run: _Run, end: int, flag: _SignalFlag, mlog: MetricsLog | None) -> str:
    """Run steps until ``end``; returns why it stopped."""
    cfg = run.cfg
    from tqdm import tqdm

    bar = tqdm(
        total=end,
        initial=run.step,
        disable=not (run.info.is_main and cfg.train.progress),
        unit="step",
        dynamic_ncols=True,
    )
    rate = None
    every = cfg.train.rankme_every if run.info.is_main else 0
    if every and cfg.train.strategy == "fsdp" and run.info.distributed:
        log.warning("train.rankme_every: RankMe probes are not run under FSDP (sharded weights)")
        every = 0
    probe: dict[str, Any] | None = None
    try:
        while run.step < end:
            epoch, start = divmod(run.step, run.spe)
            got = 0
            t0 = time.perf_counter()
            for batch in run.source.batches(epoch, start):
                if every and probe is None:  # the run's first batch, fixed for the whole run
                    probe = to_device(batch["teacher"][0], run.info.device)
                res = run.one_step(batch)
                dt = time.perf_counter() - t0
                t0 = time.perf_counter()
                got += 1
                run.streak = run.streak + 1 if res.skipped else 0
                run.nonfinite_total += int(res.skipped)
                rec = run.record(res, dt)
                run.step += 1
                probed = bool(every) and probe is not None and run.step % every == 0
                if probed:
                    assert probe is not None
                    student = unwrap(run.objs.student)
                    assert isinstance(student, MultiCropModel)
                    models = {"teacher": run.objs.teacher, "student": student}
                    rec.update(probe_rankme(models, probe))
                bar.update(1)
                rate = (
                    rec["images_per_s"] if rate is None else 0.9 * rate + 0.1 * rec["images_per_s"]
                )
                bar.set_postfix(
                    loss=f"{res.loss:.4f}", img_s=f"{rate:.1f}", skipped=run.nonfinite_total
                )
                if mlog is not None and (
                    res.skipped or probed or run.step % cfg.train.log_every == 0 or run.step == end
                ):
                    mlog.write(rec)
                if res.skipped:
                    log.warning("step %d: non-finite loss/gradient, step skipped", run.step)
                    if run.streak >= cfg.train.max_nonfinite:
                        raise run.nonfinite_stop()
                if flag.any_rank():
                    run.save()
                    log.warning("SIGTERM: wrote %s at step %d, exiting", run.ckpt, run.step)
                    return "signal"
                if run.step % cfg.train.checkpoint_every == 0 and run.streak == 0:
                    run.save()
                if run.step >= end or run.step % run.spe == 0:
                    break
            if got == 0:
                raise RuntimeError(
                    f"the data source yielded no batch for epoch {epoch} from {start}"
                )
    finally:
        bar.close()
    return "done" if end == run.sched.total_steps else "max_steps"


# What a run writes into train.output_dir (their stale temporaries are removed on start).
RUN_FILES = (
    CHECKPOINT_NAME,
    "config.yaml",
    "metrics.jsonl",
    "loss_curve.png",
    "encoder.safetensors",
)


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


def _run(cfg: PretrainConfig, info: DistInfo, source: BatchSource, resume: bool) -> PretrainResult:
    check_run_folder(cfg, resume, info.is_main)
    run = _Run(cfg, info, source)
    if resume:
        run.resume()
    if info.is_main:
        save_config(cfg, run.out / "config.yaml")
    metrics = run.out / "metrics.jsonl"
    mlog = MetricsLog(metrics, resume_step=run.step if resume else None) if info.is_main else None
    end = run.sched.total_steps
    if cfg.train.max_steps is not None:
        end = min(end, cfg.train.max_steps)
    log.info(
        "pretraining %s: %d steps/epoch, steps %d -> %d of %d, H=%s, world=%d on %s",
        cfg.model.name,
        run.spe,
        run.step,
        end,
        run.sched.total_steps,
        run.high_freq,
        info.world_size,
        info.device,
    )
    try:
        with _SignalFlag() as flag:
            stopped = _iterate(run, end, flag, mlog)
    finally:
        if mlog is not None:
            mlog.close()
    if run.last_saved != run.step:
        run.save()
    encoder = None
    if stopped != "signal":
        encoder = export_encoder(
            run.objs.teacher,
            cfg.model.name,
            run.out / "encoder.safetensors",
            extra={"pretrain_step": run.step},
            is_main=info.is_main,
        )
        if info.is_main:
            plot_loss_curve(metrics, run.out / "loss_curve.png")
            plot_diagnostics(metrics, run.out / "diagnostics.png", cfg.model.name)
    return PretrainResult(
        run.out, run.step, stopped, run.ckpt, encoder, metrics, run.nonfinite_total
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
        result = _run(cfg, info, source, resume)
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
