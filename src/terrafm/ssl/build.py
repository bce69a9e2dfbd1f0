"""Everything a pretraining run trains, built from a :class:`PretrainConfig`: student, teacher,
heads, optimiser, losses and the schedules (docs/design.md, "Objective"; docs/pretraining.md).

:func:`build_training` seeds the initial weights identically on every rank, wraps the student for
the job (DDP, or FSDP2 with ``train.strategy=fsdp``), then reseeds per rank for drop path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from terrafm.config import PretrainConfig
from terrafm.models import create_model
from terrafm.ssl.distributed import DistInfo, shard_fsdp, wrap_ddp
from terrafm.ssl.heads import DINOHead, MultiCropModel
from terrafm.ssl.loss import DualCenteredDINOLoss, PatchDistillationLoss, high_frequency_classes
from terrafm.ssl.schedules import Schedules
from terrafm.ssl.step import Extras, build_student_teacher, make_optimizer

__all__ = ["TrainingObjects", "build_training", "high_freq_set", "schedules_for", "seed_all"]

log = logging.getLogger(__name__)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's random streams."""
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
    seed_all(cfg.train.seed)  # identical initial weights on every rank
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
    seed_all(cfg.train.seed + 1000 * info.rank + 1)  # per-rank stream for drop path etc.
    return TrainingObjects(wrapped, teacher, optimizer, loss_fn, extras)


def schedules_for(cfg: PretrainConfig, steps_per_epoch: int, world: int) -> Schedules:
    """The lr / wd / teacher-momentum / temperature schedules of ``cfg`` (lr scaled by the
    global batch when ``optim.scale_lr_with_batch``)."""
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


def high_freq_set(cfg: PretrainConfig, landcover_counts: Mapping[int, int]) -> list[int]:
    """The set H: ``loss.high_freq_classes`` when given, else computed from the training set."""
    if cfg.loss.high_freq_classes is not None:
        return sorted(cfg.loss.high_freq_classes)
    counts = dict(landcover_counts)
    hf = high_frequency_classes(counts)
    if cfg.loss.dual_centering and not hf:
        log.warning("no high-frequency land-cover class found (counts %s): c_h stays at 0", counts)
    return hf
