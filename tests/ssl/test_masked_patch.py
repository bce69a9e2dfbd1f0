"""Opt-in masked patch distillation, KoLeo and the collapse diagnostics (docs/pretraining.md)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terrafm.config import PretrainConfig, load_config, shipped_config
from terrafm.models import create_model
from terrafm.ssl.batch import RandomSource, random_batch
from terrafm.ssl.checkpointing import load_training_state
from terrafm.ssl.distributed import DistInfo
from terrafm.ssl.heads import DINOHead, backbone_tokens
from terrafm.ssl.loss import DualCenteredDINOLoss, PatchDistillationLoss, koleo_loss
from terrafm.ssl.masking import draw_token_masks
from terrafm.ssl.metrics import read_metrics
from terrafm.ssl.step import (
    Extras,
    build_student_teacher,
    ema_update,
    make_optimizer,
    train_step,
)
from terrafm.ssl.train import build_training, pretrain

K = 32


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


# --------------------------------------------------------------------------- losses
def test_patch_loss_and_centres_match_a_plain_loop() -> None:
    g = torch.Generator().manual_seed(0)
    b, views, p = 3, 2, 4
    n = b * views
    teacher = torch.randn(n, p, K, generator=g) * 3
    masks = torch.rand(n, p, generator=g) < 0.5
    masks[0] = False  # a view without masked patches contributes 0
    masks[1, 0] = True
    student = torch.randn(int(masks.sum()), K, generator=g) * 2
    landcover = torch.tensor([10, 40, 30])
    loss_fn = PatchDistillationLoss(K, [10, 30], alpha=0.8, center_momentum=0.9, student_temp=0.1)
    c0, ch0 = torch.randn(1, K, generator=g), torch.randn(1, K, generator=g)
    loss_fn.center.copy_(c0)
    loss_fn.center_h.copy_(ch0)
    out = loss_fn(student, teacher, masks, landcover, teacher_temp=0.05)

    t, s, m = teacher.double().numpy(), student.double().numpy(), masks.numpy()
    c, ch = c0.double().numpy()[0], ch0.double().numpy()[0]
    per_view, row = [], 0
    for v in range(n):
        ces = []
        for j in range(p):
            if not m[v, j]:
                continue
            q = _softmax((t[v, j] - 0.8 * c - 0.2 * ch) / 0.05)
            log_ps = np.log(_softmax(s[row] / 0.1))
            ces.append(-(q * log_ps).sum())
            row += 1
        per_view.append(sum(ces) / len(ces) if ces else 0.0)
    assert row == len(s)
    np.testing.assert_allclose(float(out.loss), np.mean(per_view), rtol=1e-5)
    # Centres: EMA of the mean patch logit over every patch, and over patches of samples in H.
    in_h = np.array([lc in (10, 30) for lc in landcover.tolist()] * views)
    mean_all = t.reshape(-1, K).mean(0)
    mean_h = t[in_h].reshape(-1, K).mean(0)
    np.testing.assert_allclose(out.new_center.numpy()[0], 0.9 * c + 0.1 * mean_all, rtol=1e-5)
    np.testing.assert_allclose(out.new_center_h.numpy()[0], 0.9 * ch + 0.1 * mean_h, rtol=1e-5)
    assert out.masked == int(masks.sum())
    loss_fn.commit(out)
    torch.testing.assert_close(loss_fn.center, out.new_center)


def test_patch_loss_rejects_mismatched_shapes() -> None:
    loss_fn = PatchDistillationLoss(K)
    masks = torch.zeros(2, 4, dtype=torch.bool)
    masks[0, 1] = True
    with pytest.raises(ValueError, match="student patch logits"):
        loss_fn(torch.zeros(2, K), torch.zeros(2, 4, K), masks, torch.tensor([10]), 0.04)
    with pytest.raises(ValueError, match="token masks"):
        loss_fn(torch.zeros(1, K), torch.zeros(2, 5, K), masks, torch.tensor([10]), 0.04)


def test_koleo_matches_a_plain_loop() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    z = x.double().numpy()
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    logs = []
    for i in range(len(z)):
        j = max((k for k in range(len(z)) if k != i), key=lambda k: z[i] @ z[k])
        logs.append(np.log(np.linalg.norm(z[i] - z[j]) + 1e-8))
    np.testing.assert_allclose(float(koleo_loss(x)), -np.mean(logs), rtol=1e-5)
    # Scale-free (L2-normalised) and larger for a batch bunched together.
    np.testing.assert_allclose(float(koleo_loss(3 * x)), float(koleo_loss(x)), rtol=1e-5)
    bunched = x[:1] + 0.01 * x
    assert float(koleo_loss(bunched)) > float(koleo_loss(x)) + 1
    with pytest.raises(ValueError, match="B >= 2"):
        koleo_loss(x[:1])


def test_cls_loss_kl_diagnostic_is_cross_entropy_minus_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    b = 4
    s, t = torch.randn(4 * b, K, generator=g), torch.randn(2 * b, K, generator=g)
    loss_fn = DualCenteredDINOLoss(K, [10])
    out = loss_fn(s, t, torch.tensor([10, 20, 10, 30]), 0.04, n_student_views=4)
    pt = loss_fn.teacher_probs(t, 0.04).chunk(2)
    ls = F.log_softmax(s / 0.1, dim=-1).chunk(4)
    kls = [
        (pt[i] * (pt[i].clamp_min(1e-12).log() - ls[v])).sum(-1).mean()
        for i in range(2)
        for v in range(4)
        if v != i
    ]
    torch.testing.assert_close(out.kl, torch.stack(kls).mean(), rtol=1e-4, atol=1e-5)
    p_mean = torch.cat(pt).mean(0)
    torch.testing.assert_close(out.teacher_batch_entropy, -(p_mean * p_mean.log()).sum())


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("mode", ["block", "random"])
def test_token_masks_count_and_probability(mode: str) -> None:
    g = torch.Generator().manual_seed(3)
    m = draw_token_masks(400, 6, 5, (0.2, 0.5), prob=1.0, mode=mode, generator=g)
    counts = m.sum(1)
    assert m.shape == (400, 30) and m.dtype == torch.bool
    assert int(counts.min()) >= round(0.2 * 30) and int(counts.max()) <= round(0.5 * 30)
    half = draw_token_masks(2000, 4, 4, (0.3, 0.3), prob=0.5, mode=mode, generator=g)
    assert set(half.sum(1).tolist()) == {0, 5}
    assert 0.45 < float((half.sum(1) > 0).float().mean()) < 0.55
    again = draw_token_masks(8, 4, 4, (0.1, 0.5), 0.5, mode, torch.Generator().manual_seed(9))
    same = draw_token_masks(8, 4, 4, (0.1, 0.5), 0.5, mode, torch.Generator().manual_seed(9))
    assert torch.equal(again, same)
    with pytest.raises(ValueError):
        draw_token_masks(2, 4, 4, (0.5, 0.2), 0.5, mode)


def test_block_masks_are_blocky() -> None:
    # Block masks put masked patches next to each other far more often than random ones.
    def neighbours(m: torch.Tensor) -> float:
        grid = m.reshape(-1, 8, 8).float()
        horiz = (grid[:, :, 1:] * grid[:, :, :-1]).sum()
        return float(horiz / grid.sum())

    g = torch.Generator().manual_seed(4)
    block = draw_token_masks(200, 8, 8, (0.3, 0.3), 1.0, "block", g)
    rand = draw_token_masks(200, 8, 8, (0.3, 0.3), 1.0, "random", g)
    assert neighbours(block) > neighbours(rand) + 0.2


# --------------------------------------------------------------------------- model
def _pair(patch_head: bool = True, group: bool = False):
    torch.manual_seed(0)
    backbone = create_model("terrafm_tiny", drop_path_rate=0.0)
    head = DINOHead(96, K, hidden_dim=48, bottleneck_dim=16)
    ph = DINOHead(96, 24, hidden_dim=48, bottleneck_dim=16) if patch_head else None
    return build_student_teacher(backbone, head, group, ph, mask_token=True)


def test_backbone_tokens_equal_forward_features_and_mask_replaces_embeddings() -> None:
    model = create_model("terrafm_tiny").eval()
    batch = random_batch(3, global_size=32, seed=5)
    view = batch["teacher"][0]
    with torch.no_grad():
        tok = backbone_tokens(model, view["inputs"], view["masks"])
        ref = model.forward_features(view["inputs"], view["masks"])
        torch.testing.assert_close(tok[:, 0], ref["x_norm_clstoken"])
        torch.testing.assert_close(tok[:, 1:], ref["x_norm_patchtokens"])
        none = torch.zeros(3, 4, dtype=torch.bool)
        token = torch.randn(1, 1, 96)
        same = backbone_tokens(model, view["inputs"], view["masks"], none, token)
        torch.testing.assert_close(same, tok)
        # Masking every patch: the output no longer depends on the image.
        full = torch.ones(3, 4, dtype=torch.bool)
        a = backbone_tokens(model, view["inputs"], view["masks"], full, token)
        other = {k: torch.randn_like(x) for k, x in view["inputs"].items()}
        b = backbone_tokens(model, other, view["masks"], full, token)
        torch.testing.assert_close(a, b)


def test_grouped_forward_equals_masked_forward_with_token_masks() -> None:
    grouped, _ = _pair(group=True)
    masked = copy.deepcopy(grouped)
    masked.group_by_sensors = False
    grouped.eval()
    masked.eval()
    batch = random_batch(4, global_size=32, local_size=16, n_local=2, seed=6)
    views = batch["student_global"] + batch["student_local"]
    tm = draw_token_masks(8, 2, 2, (0.25, 0.5), 1.0, "random", torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = grouped(views, 2, tm, True)
        b = masked(views, 2, tm, True)
        legacy = grouped(views)
        unmasked = grouped(views, 2, None, True)
    for key in ("cls", "cls_features", "patch"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert a["patch"].shape == (int(tm.sum()), 24)
    assert unmasked["patch"].shape == (8, 4, 24)
    # Unmasked, the CLS logits are the plain wrapper's; masked, only the global views change.
    torch.testing.assert_close(unmasked["cls"], legacy, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["cls"][8:], legacy[8:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a["cls"][:8], legacy[:8], atol=1e-3)


def test_gradient_reaches_mask_token_and_both_heads() -> None:
    student, teacher = _pair()
    batch = random_batch(4, global_size=32, local_size=16, n_local=2, seed=7)
    extras = Extras(PatchDistillationLoss(24, [10]), mask_prob=1.0, koleo_weight=0.1)
    opt = make_optimizer(student)
    token_before = student.mask_token.detach().clone()
    res = train_step(
        student,
        teacher,
        DualCenteredDINOLoss(K, [10]),
        opt,
        batch,
        {"lr": 1e-2, "wd": 0.0, "momentum": 0.9, "teacher_temp": 0.04},
        freeze_last_layer=False,
        clip_grad=0.0,
        amp=False,
        device=torch.device("cpu"),
        extras=extras,
    )
    assert not res.skipped and res.masked_patches and res.masked_patches > 0
    assert res.patch_loss is not None and res.patch_loss > 0 and res.koleo is not None
    assert abs(res.loss - (res.cls_loss + res.patch_loss + 0.1 * res.koleo)) < 1e-4
    assert not torch.equal(student.mask_token, token_before)  # AdamW moved it: it had a gradient
    assert float(extras.patch_loss.center.norm()) > 0  # patch centres committed

    # The gradient itself, without the optimiser: the patch loss alone reaches the mask token.
    student.zero_grad(set_to_none=True)
    tm = draw_token_masks(8, 2, 2, (0.5, 0.5), 1.0, "random", torch.Generator().manual_seed(1))
    out = student(batch["student_global"], 2, tm, True)
    out["patch"].logsumexp(-1).mean().backward()
    assert student.mask_token.grad is not None and float(student.mask_token.grad.abs().sum()) > 0
    assert student.patch_head.last_layer.weight_v.grad is not None


def test_freeze_last_layer_covers_the_patch_head() -> None:
    student, teacher = _pair()
    batch = random_batch(4, global_size=32, local_size=16, n_local=2, seed=8)
    before = student.patch_head.last_layer.weight_v.detach().clone()
    train_step(
        student,
        teacher,
        DualCenteredDINOLoss(K),
        make_optimizer(student),
        batch,
        {"lr": 1e-2, "wd": 0.0, "momentum": 0.9, "teacher_temp": 0.04},
        freeze_last_layer=True,
        clip_grad=3.0,
        amp=False,
        device=torch.device("cpu"),
        extras=Extras(PatchDistillationLoss(24), mask_prob=1.0),
    )
    torch.testing.assert_close(student.patch_head.last_layer.weight_v, before, rtol=0, atol=0)


# --------------------------------------------------------------------------- off by default
def test_extras_are_off_by_default_and_never_in_the_majortom_recipes(tiny_cfg) -> None:
    cfg = tiny_cfg()
    assert not cfg.loss.ibot.enabled and cfg.loss.koleo_weight == 0
    assert build_training(cfg, DistInfo(), [10]).extras is None
    for name in ("pretrain_base_majortom", "pretrain_large_majortom", "pretrain_quickstart"):
        c = load_config(PretrainConfig, shipped_config(name))
        assert not c.loss.ibot.enabled and c.loss.koleo_weight == 0, name
    on = tiny_cfg("loss.ibot.enabled=true", "loss.ibot.shared_head=true")
    objs = build_training(on, DistInfo(), [10])
    assert objs.extras is not None and objs.extras.patch_loss is not None
    assert not hasattr(objs.student, "patch_head")  # shared: the CLS head maps the patches
    assert objs.extras.patch_loss.center.shape == (1, on.head.out_dim)


def _legacy_step(student, teacher, loss_fn, optimizer, batch, hp) -> None:
    """The paper's step as it was before the extras existed, written out plainly."""
    for g in optimizer.param_groups:
        g["lr"] = hp["lr"]
        g["weight_decay"] = hp["wd"] if g.get("apply_wd", True) else 0.0
    views = list(batch["student_global"]) + list(batch["student_local"])
    with torch.no_grad():
        t_out = teacher(list(batch["teacher"]))
    out = loss_fn(student(views), t_out, batch["landcover"], hp["teacher_temp"], len(views))
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.grad is not None], 3.0)
    optimizer.step()
    ema_update(student, teacher, hp["momentum"])
    loss_fn.commit(out)
    optimizer.zero_grad(set_to_none=True)


def test_off_by_default_step_is_bit_identical_to_the_paper_step(tiny_cfg) -> None:
    cfg = tiny_cfg("model.drop_path_rate=0.1")
    runs = []
    for use_train_step in (True, False):
        objs = build_training(cfg, DistInfo(), [10, 30])
        torch.manual_seed(123)  # the drop-path stream
        src = RandomSource(4, 3, global_size=32, local_size=16, n_local=2)
        hp = {"lr": 2e-3, "wd": 0.04, "momentum": 0.99, "teacher_temp": 0.04}
        for i in range(3):
            batch = src.batch(0, i)
            if use_train_step:
                train_step(objs.student, objs.teacher, objs.loss, objs.optimizer, batch, hp,
                           freeze_last_layer=False, clip_grad=3.0, amp=False,
                           device=torch.device("cpu"), extras=objs.extras)  # fmt: skip
            else:
                _legacy_step(objs.student, objs.teacher, objs.loss, objs.optimizer, batch, hp)
        runs.append({**objs.student.state_dict(), **objs.loss.state_dict()})
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


# --------------------------------------------------------------------------- the loop
def _source() -> RandomSource:
    return RandomSource(4, steps_per_epoch=3, global_size=32, local_size=16, n_local=2)


IBOT = ("loss.ibot.enabled=true", "loss.ibot.mask_prob=1.0", "loss.koleo_weight=0.1")


def test_resume_with_masked_patch_distillation_is_exact(tiny_cfg) -> None:
    straight = pretrain(tiny_cfg("train.max_steps=4", *IBOT, out="straight"), _source())
    pretrain(tiny_cfg("train.max_steps=2", *IBOT, out="resumed"), _source())
    resumed = pretrain(tiny_cfg("train.max_steps=4", *IBOT, out="resumed"), _source(), resume=True)
    a, b = load_training_state(straight.checkpoint), load_training_state(resumed.checkpoint)
    for part in ("student", "teacher", "loss", "patch_loss"):
        assert a[part].keys() == b[part].keys(), part
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert "mask_token" in a["student"] and "patch_head.last_layer.weight_v" in a["student"]
    assert float(a["patch_loss"]["center"].norm()) > 0
    for key in ("exp_avg", "exp_avg_sq"):
        for pid, st in a["optimizer"]["state"].items():
            assert torch.equal(st[key], b["optimizer"]["state"][pid][key])


def test_diagnostics_are_logged_and_plotted(tiny_cfg) -> None:
    res = pretrain(tiny_cfg("train.rankme_every=2", *IBOT), _source())
    recs = read_metrics(res.metrics)
    assert [r["step"] for r in recs] == list(range(1, 7))
    for r in recs:
        assert r["log_k"] == pytest.approx(math.log(64))
        assert 0 < r["teacher_entropy"] <= r["log_k"] + 1e-4
        assert r["teacher_batch_entropy"] >= r["teacher_entropy"] - 1e-4  # concavity
        assert r["kl"] >= -1e-4
        for key in ("cls_loss", "patch_loss", "patch_center_norm", "koleo", "masked_patches"):
            assert key in r, key
    probed = [r for r in recs if "rankme_cls_teacher" in r]
    assert [r["step"] for r in probed] == [2, 4, 6]
    for r in probed:
        assert 1 <= r["rankme_cls_teacher"] <= 4  # 4 probe samples
        assert 1 <= r["rankme_patch_student"] <= 96
    assert (res.output_dir / "diagnostics.png").is_file()
    # rankme_every may change on resume (it does not touch the training state).
    json.dumps(recs)


def test_resume_accepts_checkpoints_written_before_the_new_keys(tiny_cfg) -> None:
    from terrafm.ssl.checkpointing import check_resume_config as _check_resume_config

    cfg = tiny_cfg()
    saved = json.loads(json.dumps(__import__("terrafm.config").config.to_dict(cfg)))
    del saved["loss"]["ibot"], saved["loss"]["koleo_weight"], saved["train"]["rankme_every"]
    _check_resume_config(saved, cfg, cfg.train.output_dir)  # type: ignore[arg-type]
    on = tiny_cfg("loss.ibot.enabled=true")
    with pytest.raises(ValueError, match=r"loss\.ibot\.enabled"):
        _check_resume_config(saved, on, on.train.output_dir)  # type: ignore[arg-type]
