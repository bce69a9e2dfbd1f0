"""One pretraining step: student/teacher forward, dual-centred DINO loss, update, EMA (docs/design.md, "Objective").

The step reads as DINO's ``train_one_epoch``: set lr / wd -> teacher on the 2 global views ->
student on all views -> loss -> backward -> freeze last layer -> clip -> optimiser step -> teacher
EMA -> commit centres. A step whose loss or gradient norm is not finite on any rank is skipped
(no parameter, optimiser or centre change) and reported, so one bad batch never poisons the run.

With the opt-in extras (:class:`Extras`: masked patch distillation, KoLeo) the student's global
views are masked and the step adds their weighted losses; without them the step is unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from terrafm.ssl.distributed import all_reduce_sum, unwrap
from terrafm.ssl.heads import DINOHead, MultiCropModel
from terrafm.ssl.loss import (
    DualCenteredDINOLoss,
    LossOutput,
    PatchDistillationLoss,
    PatchLossOutput,
    koleo_loss,
)
from terrafm.ssl.masking import MaskMode, draw_token_masks

__all__ = [
    "Extras",
    "StepResult",
    "build_student_teacher",
    "ema_update",
    "make_optimizer",
    "param_groups",
    "to_device",
    "train_step",
]

# Parameters that are tokens or embeddings rather than weights: no weight decay (docs/design.md, "Objective").
_NO_DECAY_NAMES = ("cls_token", "pos_embed", "queries", "mask_token")


def build_student_teacher(
    backbone: nn.Module,
    head: DINOHead,
    group_by_sensors: bool = False,
    patch_head: DINOHead | None = None,
    mask_token: bool = False,
) -> tuple[MultiCropModel, MultiCropModel]:
    """Student = backbone + head (+ patch head, mask token); teacher = a frozen copy in eval
    mode (no drop path)."""
    student = MultiCropModel(
        backbone,  # type: ignore[arg-type]
        head,
        group_by_sensors,
        patch_head=patch_head,
        mask_token=mask_token,
    )
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def _no_decay(name: str, p: torch.Tensor) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    modality = ".patch_embed." in f".{name}" and leaf.endswith("_embed")
    return p.ndim <= 1 or name.endswith(".bias") or leaf in _NO_DECAY_NAMES or modality


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights, and biases / norms / tokens / embeddings without decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if _no_decay(name, p) else decay).append(p)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; lr and wd are set every step from the schedules."""
    return torch.optim.AdamW(param_groups(model), lr=0.0, weight_decay=0.0, betas=betas)


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
    s_params = dict(unwrap(student).named_parameters())
    t_params = dict(teacher.named_parameters())
    if s_params.keys() != t_params.keys():
        raise ValueError("teacher and student parameters differ; cannot apply the EMA")
    ts: list[torch.Tensor] = [t_params[k] for k in t_params]
    ss: list[torch.Tensor] = [s_params[k].detach() for k in t_params]
    torch._foreach_mul_(ts, momentum)
    torch._foreach_add_(ts, ss, alpha=1.0 - momentum)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor of a nested batch (dicts, lists) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


@dataclass
class Extras:
    """The opt-in objectives beyond the paper (docs/pretraining.md); both off by default.

    Attributes:
        patch_loss: masked patch distillation (holds the patch centres); None: off.
        patch_weight: factor of the patch loss.
        mask_ratio: ``(low, high)`` share of a masked view's patches.
        mask_prob: probability that a global view is masked.
        mask_mode: ``block`` or ``random``.
        koleo_weight: factor of the KoLeo term on the student's global-view CLS (0: off).
    """

    patch_loss: PatchDistillationLoss | None = None
    patch_weight: float = 1.0
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_prob: float = 0.5
    mask_mode: MaskMode = "block"
    koleo_weight: float = 0.0

    @property
    def active(self) -> bool:
        return self.patch_loss is not None or self.koleo_weight > 0


@dataclass
class StepResult:
    """What a step did; ``skipped`` steps changed nothing."""

    loss: float
    skipped: bool
    grad_norm: float
    teacher_entropy: float
    center_norm: float
    center_h_norm: float
    h_count: int
    # Collapse diagnostics: KL(P_t || P_s) of the CLS loss, entropy of the batch-mean teacher
    # distribution; with the extras, the parts of the loss and the patch centres' norms.
    kl: float = float("nan")
    teacher_batch_entropy: float = float("nan")
    cls_loss: float | None = None
    patch_loss: float | None = None
    patch_kl: float | None = None
    patch_teacher_entropy: float | None = None
    patch_center_norm: float | None = None
    patch_center_h_norm: float | None = None
    masked_patches: int | None = None
    koleo: float | None = None


def _set_hparams(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
        g["weight_decay"] = wd if g.get("apply_wd", True) else 0.0


def _last_layer_params(student: nn.Module) -> Iterable[nn.Parameter]:
    model = unwrap(student)
    assert isinstance(model, MultiCropModel)
    params = list(model.head.last_layer.parameters())
    patch_head = getattr(model, "patch_head", None)
    if isinstance(patch_head, DINOHead):
        params += list(patch_head.last_layer.parameters())
    return params


def _grad_norm(student: nn.Module, max_norm: float) -> float:
    params = [p for p in student.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = max_norm if max_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(params, limit)
    full = getattr(norm, "full_tensor", None)  # FSDP2 returns a DTensor
    return float(full() if callable(full) else norm)


def train_step(
    student: nn.Module,
    teacher: MultiCropModel,
    loss_fn: DualCenteredDINOLoss,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, Any],
    hp: Mapping[str, float],
    *,
    freeze_last_layer: bool,
    clip_grad: float,
    amp: bool,
    device: torch.device,
    extras: Extras | None = None,
) -> StepResult:
    """One optimisation step on a contract-B batch already on ``device``.

    Args:
        student: student (possibly DDP/FSDP wrapped), in train mode.
        teacher: teacher, in eval mode, updated in place by EMA.
        loss_fn: dual-centred loss holding the centres.
        optimizer: AdamW with the groups of :func:`param_groups`.
        batch: ``teacher``, ``student_global``, ``student_local`` view lists and ``landcover``.
        hp: this step's ``lr``, ``wd``, ``momentum`` and ``teacher_temp``.
        freeze_last_layer: drop the gradient of the head's last layer (early epochs).
        clip_grad: max gradient norm (0: no clipping).
        amp: bfloat16 autocast.
        device: where the batch and models live.
        extras: the opt-in masked patch distillation and KoLeo (None: the paper's step).
    """
    _set_hparams(optimizer, hp["lr"], hp["wd"])
    teacher_views = list(batch["teacher"])
    student_views = list(batch["student_global"]) + list(batch["student_local"])
    if extras is not None and extras.active:
        out, total, pout, koleo = _forward_extras(
            student, teacher, loss_fn, batch, hp, extras, amp=amp, device=device
        )
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                t_out = teacher(teacher_views)  # (2B, K)
            s_out = student(student_views)  # ((2 + n_local) B, K)
        out = loss_fn(
            s_out,
            t_out,
            batch["landcover"],
            hp["teacher_temp"],
            n_student_views=len(student_views),
            n_teacher_views=len(teacher_views),
        )
        total, pout, koleo = out.loss, None, None
    # Backward even when the loss is bad, so DDP's per-iteration bookkeeping stays consistent.
    total.backward()
    if freeze_last_layer:
        for p in _last_layer_params(student):
            p.grad = None
    grad_norm = _grad_norm(student, clip_grad)
    # Every rank must agree on skipping: sum the losses (NaN anywhere makes the sum NaN).
    loss_sum = all_reduce_sum(total.detach().float().reshape(1).clone())
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    loss_mean = float(loss_sum.item()) / world
    ok = math.isfinite(loss_mean) and math.isfinite(grad_norm)
    if ok:
        optimizer.step()
        ema_update(student, teacher, hp["momentum"])
        loss_fn.commit(out)
        if pout is not None:
            assert extras is not None and extras.patch_loss is not None
            extras.patch_loss.commit(pout)
    optimizer.zero_grad(set_to_none=True)
    res = StepResult(
        loss=loss_mean,
        skipped=not ok,
        grad_norm=grad_norm,
        teacher_entropy=float(out.teacher_entropy),
        center_norm=float(loss_fn.center.norm()),
        center_h_norm=float(loss_fn.center_h.norm()),
        h_count=out.h_count,
        kl=float(out.kl) if out.kl is not None else float("nan"),
        teacher_batch_entropy=(
            float(out.teacher_batch_entropy)
            if out.teacher_batch_entropy is not None
            else float("nan")
        ),
    )
    if extras is not None and extras.active:
        res.cls_loss = float(out.loss.detach())
        res.koleo = None if koleo is None else float(koleo)
        if pout is not None:
            assert extras.patch_loss is not None
            res.patch_loss = float(pout.loss.detach())
            res.patch_kl = float(pout.kl)
            res.patch_teacher_entropy = float(pout.teacher_entropy)
            res.patch_center_norm = float(extras.patch_loss.center.norm())
            res.patch_center_h_norm = float(extras.patch_loss.center_h.norm())
            res.masked_patches = pout.masked
    return res


def _forward_extras(
    student: nn.Module,
    teacher: MultiCropModel,
    loss_fn: DualCenteredDINOLoss,
    batch: Mapping[str, Any],
    hp: Mapping[str, float],
    extras: Extras,
    *,
    amp: bool,
    device: torch.device,
) -> tuple[LossOutput, torch.Tensor, PatchLossOutput | None, torch.Tensor | None]:
    """Forward passes and losses of a step with the extras: (CLS loss output, total loss, patch
    loss output, KoLeo term)."""
    teacher_views = list(batch["teacher"])
    globals_ = list(batch["student_global"])
    student_views = globals_ + list(batch["student_local"])
    n_g = len(globals_)
    patches = extras.patch_loss is not None
    masks = None
    if patches:
        b, _, h, w = next(iter(globals_[0]["inputs"].values())).shape
        p = int(teacher.backbone.patch_size)
        masks = draw_token_masks(
            n_g * b, h // p, w // p, extras.mask_ratio, extras.mask_prob, extras.mask_mode
        ).to(device)  # (G * B, P)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        with torch.no_grad():
            t = cast(dict[str, torch.Tensor], teacher(teacher_views, n_g, None, patches))
        s = cast(dict[str, torch.Tensor], student(student_views, n_g, masks, patches))
    out = loss_fn(
        s["cls"],
        t["cls"],
        batch["landcover"],
        hp["teacher_temp"],
        n_student_views=len(student_views),
        n_teacher_views=len(teacher_views),
    )
    total = out.loss
    pout = None
    if extras.patch_loss is not None:
        assert masks is not None
        pout = extras.patch_loss(
            s["patch"], t["patch"], masks, batch["landcover"], hp["teacher_temp"]
        )
        total = total + extras.patch_weight * pout.loss
    koleo = None
    if extras.koleo_weight > 0:
        feats = s["cls_features"].float().chunk(n_g)
        koleo = torch.stack([koleo_loss(f) for f in feats]).sum()
        total = total + extras.koleo_weight * koleo
    return out, total, pout, None if koleo is None else koleo.detach()
