"""Projection head, multi-crop wrapper, parameter groups, EMA and the training step (docs/design.md, "Objective")."""

from __future__ import annotations

import copy

import pytest
import torch

from terrafm.models import create_model
from terrafm.ssl.batch import random_batch
from terrafm.ssl.heads import DINOHead, MultiCropModel
from terrafm.ssl.loss import DualCenteredDINOLoss
from terrafm.ssl.step import (
    build_student_teacher,
    ema_update,
    make_optimizer,
    param_groups,
    train_step,
)

K = 64


def _pair(seed: int = 0) -> tuple[MultiCropModel, MultiCropModel]:
    torch.manual_seed(seed)
    backbone = create_model("terrafm_tiny", drop_path_rate=0.1)
    return build_student_teacher(backbone, DINOHead(96, K, hidden_dim=48, bottleneck_dim=16))


def _hp(lr: float = 1e-3) -> dict[str, float]:
    return {"lr": lr, "wd": 0.04, "momentum": 0.9, "teacher_temp": 0.04}


def test_head_shapes_and_weight_norm() -> None:
    head = DINOHead(96, K, hidden_dim=48, bottleneck_dim=16, nlayers=3)
    out = head(torch.randn(5, 96))
    assert out.shape == (5, K)
    # norm_last_layer: every prototype has unit norm and a bottleneck input of unit norm,
    # so each logit is a cosine in [-1, 1].
    assert out.abs().max() <= 1.0 + 1e-5
    assert not head.last_layer.weight_g.requires_grad
    free = DINOHead(96, K, hidden_dim=48, bottleneck_dim=16, norm_last_layer=False)
    assert free.last_layer.weight_g.requires_grad
    with pytest.raises(ValueError):
        DINOHead(96, K, nlayers=0)


def test_multicrop_grouping_equals_separate_calls() -> None:
    student, _ = _pair()
    student.eval()
    batch = random_batch(3, global_size=32, local_size=16, n_local=2, seed=1)
    views = batch["student_global"] + batch["student_local"]
    out = student(views)  # (4 * 3, K)
    sep = []
    for v in views:
        used = [k for k in v["inputs"] if v["masks"][k].any()]
        inputs = {k: v["inputs"][k] for k in used}
        masks = {k: v["masks"][k] for k in used}
        sep.append(student.head(student.backbone(inputs, masks)))
    torch.testing.assert_close(out, torch.cat(sep), rtol=1e-4, atol=1e-5)


def test_grouping_by_sensor_subset_equals_masked_call() -> None:
    student, _ = _pair()
    student.eval()
    grouped = copy.deepcopy(student)
    grouped.group_by_sensors = True
    batch = random_batch(6, sensors=("s1", "s2_l1c", "s2_l2a"), n_local=2, seed=4)
    views = batch["teacher"] + batch["student_local"]
    with torch.no_grad():
        torch.testing.assert_close(grouped(views), student(views), rtol=1e-4, atol=1e-5)
    # Gradients agree too: grouping changes the compute, not the function.
    for m in (student, grouped):
        m.zero_grad()
        m(views).square().sum().backward()
    for (n, a), (_, b) in zip(student.named_parameters(), grouped.named_parameters()):
        if a.grad is not None and b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=n)


def test_teacher_is_frozen_copy() -> None:
    student, teacher = _pair()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for (n1, p1), (n2, p2) in zip(student.named_parameters(), teacher.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()


def test_param_groups_exclude_norms_biases_tokens_embeddings() -> None:
    student, _ = _pair()
    groups = param_groups(student)
    names = {id(p): n for n, p in student.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    for n in (
        "backbone.cls_token",
        "backbone.pos_embed",
        "backbone.patch_embed.s1_embed",
        "backbone.patch_embed.s2_l2a_embed",
        "backbone.patch_embed.projection.queries",
        "backbone.blocks.0.norm1.weight",
        "backbone.blocks.0.attn.qkv.bias",
        "backbone.norm.bias",
        "head.mlp.0.bias",
    ):
        assert n in no_decay, n
    for n in (
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.patch_embed.conv2d_s1.weight",
        "backbone.patch_embed.projection.proj1.weight",
        "head.mlp.0.weight",
        "head.last_layer.weight_v",
    ):
        assert n in decay, n
    assert "head.last_layer.weight_g" not in decay | no_decay  # frozen norm
    assert decay.isdisjoint(no_decay)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert decay | no_decay == trainable
    assert groups[1]["weight_decay"] == 0.0


def test_ema_update_matches_formula() -> None:
    student, teacher = _pair()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = copy.deepcopy(teacher.state_dict())
    ema_update(student, teacher, 0.9)
    for n, p in teacher.named_parameters():
        s = dict(student.named_parameters())[n]
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * s.detach(), rtol=0, atol=1e-6)
    ema_update(student, teacher, 1.0)  # momentum 1 keeps the teacher
    ema_update(student, teacher, 0.0)  # momentum 0 copies the student
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, dict(student.named_parameters())[n].detach())


def _step(student, teacher, loss_fn, opt, batch, freeze=False):
    return train_step(
        student,
        teacher,
        loss_fn,
        opt,
        batch,
        _hp(),
        freeze_last_layer=freeze,
        clip_grad=3.0,
        amp=False,
        device=torch.device("cpu"),
    )


def test_train_step_updates_student_teacher_and_centres() -> None:
    student, teacher = _pair()
    loss_fn = DualCenteredDINOLoss(K, [10, 30])
    opt = make_optimizer(student)
    s0 = copy.deepcopy(student.state_dict())
    t0 = copy.deepcopy(teacher.state_dict())
    res = _step(student, teacher, loss_fn, opt, random_batch(4, seed=2), freeze=True)
    assert not res.skipped and res.loss > 0 and res.grad_norm > 0
    changed = {n for n, v in student.state_dict().items() if not torch.equal(v, s0[n])}
    assert "backbone.blocks.0.attn.qkv.weight" in changed
    assert "head.last_layer.weight_v" not in changed  # frozen during the first epoch
    assert any(not torch.equal(v, t0[n]) for n, v in teacher.state_dict().items())
    assert loss_fn.center.abs().sum() > 0
    res2 = _step(student, teacher, loss_fn, opt, random_batch(4, seed=3), freeze=False)
    assert not res2.skipped
    assert not torch.equal(
        student.state_dict()["head.last_layer.weight_v"], s0["head.last_layer.weight_v"]
    )


def test_nonfinite_step_changes_nothing() -> None:
    student, teacher = _pair()
    loss_fn = DualCenteredDINOLoss(K, [10, 30])
    opt = make_optimizer(student)
    _step(student, teacher, loss_fn, opt, random_batch(4, seed=2))
    snap = [copy.deepcopy(x.state_dict()) for x in (student, teacher, loss_fn, opt)]
    bad = random_batch(4, seed=5)
    for v in bad["student_global"]:
        for k in v["inputs"]:
            v["inputs"][k][v["masks"][k]] = float("nan")
    res = _step(student, teacher, loss_fn, opt, bad)
    assert res.skipped and not torch.isfinite(torch.tensor(res.loss))
    for obj, ref in zip((student, teacher, loss_fn), snap):
        for n, v in obj.state_dict().items():
            assert torch.equal(v, ref[n]), n
    assert opt.state_dict()["state"][0]["step"] == snap[3]["state"][0]["step"]
    assert all(p.grad is None for p in student.parameters())
