"""Quickstart pieces on their own: PCA-RGB, attention maps, true colour, acceptance, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from terrafm.models import create_model
from terrafm.quickstart.pipeline import (
    acceptance,
    build_pretrain_config,
    check_ablate,
    random_encoder,
    variant_name,
)
from terrafm.quickstart.plots import attention_maps, landcover_rgb, pca_rgb, true_colour
from terrafm.quickstart.presets import get_preset

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def _numpy_pca(x: np.ndarray) -> np.ndarray:
    """Reference: the top-3 principal scores of (N, D) rows, by eigen-decomposing the covariance."""
    xc = x - x.mean(0)
    vals, vecs = np.linalg.eigh(xc.T @ xc)
    top = vecs[:, np.argsort(vals)[::-1][:3]]  # (D, 3)
    top *= np.sign(top[np.abs(top).argmax(0), np.arange(3)])  # largest loading positive
    return xc @ top


def test_pca_rgb_matches_a_plain_eigendecomposition() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(24, 24)))[0][:, :3]  # three orthonormal directions
    coef = rng.normal(size=(4 * 64, 3)) * np.array([6.0, 3.0, 1.5])
    x = coef @ basis.T + 0.01 * rng.normal(size=(256, 24))  # (B*N, D)
    rgb = pca_rgb(torch.from_numpy(x).float().reshape(4, 64, 24), (8, 8))
    assert rgb.shape == (4, 8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    ref = _numpy_pca(x)
    lo, hi = np.percentile(ref, 1, axis=0), np.percentile(ref, 99, axis=0)
    ref = np.clip((ref - lo) / (hi - lo), 0, 1).reshape(4, 8, 8, 3)
    np.testing.assert_allclose(rgb, ref, atol=2e-3)
    # Each channel follows its generating coefficient (the variances are well separated).
    for c in range(3):
        assert abs(np.corrcoef(rgb.reshape(-1, 3)[:, c], coef[:, c])[0, 1]) > 0.97


def test_attention_maps_are_normalised_cls_rows() -> None:
    torch.manual_seed(0)
    model = create_model("terrafm_tiny").eval()
    x = {"s2_l2a": torch.randn(2, 12, 48, 64)}
    maps = attention_maps(model, x)
    assert maps.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(maps.sum((-1, -2)), 1.0, rtol=1e-5)
    with torch.inference_mode():
        attn = model.get_last_selfattention(x)[:, :, 0, 1:]  # (B, h, N)
    ref = (attn / attn.sum(-1, keepdim=True)).reshape(2, 3, 3, 4).numpy()
    np.testing.assert_allclose(maps, ref, rtol=1e-6)
    assert not np.allclose(maps[:, 0], maps[:, 1])  # heads differ


def test_true_colour_uses_b04_b03_b02_and_landcover_palette() -> None:
    dn = np.full((12, 8, 8), 500.0)
    dn[BANDS.index("B04"), :4] = 3000.0  # red on the top half
    rgb = true_colour(dn, BANDS)
    assert rgb.shape == (8, 8, 3) and 0 <= rgb.min() and rgb.max() <= 1
    assert rgb[:4, :, 0].mean() > 0.9 and rgb[:4, :, 1:].mean() < 0.1
    lc = landcover_rgb(np.array([[10, 80], [0, 50]], dtype=np.uint8))
    np.testing.assert_allclose(lc[0, 0], [0, 100 / 255, 0])
    np.testing.assert_allclose(lc[1, 0], [0, 0, 0])  # unknown code


def _headline_numbers(**changes: float) -> dict[str, float]:
    h = {"knn_top1_pretrained": 50.0, "knn_top1_random": 39.0, "knn_top1_s1_pretrained": 30.0,
         "knn_top1_fused_pretrained": 55.0, "knn_top1_fused_random": 44.0,
         "knn_top1_full_pretrained": 80.0, "knn_top1_full_random": 79.0,
         "knn_top1_full_fused_pretrained": 81.0, "knn_top1_full_fused_random": 80.0,
         "linear_top1_pretrained": 86.0, "linear_top1_random": 85.0,
         "linear_top1_fused_pretrained": 87.0, "linear_top1_fused_random": 86.0,
         "miou_pretrained": 40.0, "miou_random": 37.5, "miou_fused_pretrained": 45.0,
         "miou_fused_random": 44.0, "retrieval_r1_s1_to_s2_pretrained": 10.0,
         "retrieval_r1_s1_to_s2_random": 2.0, "retrieval_chance_r1": 0.5}  # fmt: skip
    h.update(changes)
    return h


def test_acceptance_has_one_entry_per_check_of_issue_14() -> None:
    a = acceptance(_headline_numbers(), 800.0)
    assert a["issue"] == 14 and a["knn_gain_1pct"] == 11.0 and a["miou_gain"] == 2.5
    assert a["fused_minus_best_single"] == 5.0  # the issue-7 figures are kept
    assert len(a["checks"]) == 10 and all(c["passed"] for c in a["checks"]) and a["all_passed"]
    assert set(a["passed"]) == {c["check"] for c in a["checks"]}
    knn = a["checks"][0]
    assert knn["values"] == {"pretrained": 50.0, "random": 39.0, "gain": 11.0}
    assert knn["threshold"] == "gain >= 10" and "S2 L2A" in knn["check"]
    ret = next(c for c in a["checks"] if c["check"].startswith("cross-sensor retrieval"))
    assert ret["values"]["ratio"] == 5.0 and ret["values"]["chance"] == 0.5
    assert any("seeds 1 and 2" in m for m in a["not_measured"])

    def failed(h: dict[str, float], wall: float = 800.0) -> list[str]:
        return [c["check"] for c in acceptance(h, wall)["checks"] if not c["passed"]]

    # each threshold on its own
    assert failed(_headline_numbers(knn_top1_fused_random=45.5)) == [
        "kNN top-1, 1 % of labels, S1 + S2 L2A fused: pretrained >= random init + 10"
    ]
    assert failed(_headline_numbers(knn_top1_full_random=80.0)) == [
        "kNN top-1, 100 % of labels, S2 L2A: pretrained > random init"  # a tie is not "higher"
    ]
    assert len(failed(_headline_numbers(linear_top1_fused_random=90.0))) == 1
    assert failed(_headline_numbers(retrieval_r1_s1_to_s2_random=2.01)) == [
        "cross-sensor retrieval recall@1, S1 -> S2 L2A: pretrained >= 5 x random init"
    ]
    assert failed(_headline_numbers(), 901.0) == ["wall time <= 900 s"]
    # mIoU: the masked-patch-distillation encoder may carry the check when it is measured
    low = _headline_numbers(miou_pretrained=30.0)
    assert len(failed(low)) == 1
    assert failed({**low, "miou_masked_pretrained": 38.0}) == []
    # numbers a run did not measure are named, not failed
    partial = {k: v for k, v in _headline_numbers().items() if "retrieval" not in k}
    b = acceptance(partial, 800.0)
    assert len(b["checks"]) == 9 and b["all_passed"]
    assert "cross-sensor retrieval recall@1, S1 -> S2 L2A" in b["not_measured"]


def test_configs_ablations_and_random_init(tmp_path: Path) -> None:
    p = get_preset("micro")
    cfg = build_pretrain_config(p, tmp_path / "w", tmp_path / "o", 7, ["dual_centering"])
    assert cfg.train.seed == 7 and cfg.data.root == str(tmp_path / "w")
    assert not cfg.loss.dual_centering and cfg.data.fusion and cfg.data.modality_aug
    assert cfg.data.batch_size == 8  # the preset's overrides apply
    assert variant_name([]) == "full" and variant_name(["fusion", "dual_centering"]) == (
        "no_dual_centering+fusion"
    )
    assert check_ablate(["fusion", "modality_aug", "fusion"]) == ["modality_aug", "fusion"]
    with pytest.raises(ValueError, match="unknown component"):
        check_ablate(["fusion", "teleport"])
    with pytest.raises(ValueError, match="unknown quickstart preset"):
        get_preset("huge")
    a, b = random_encoder(cfg), random_encoder(cfg)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    torch.manual_seed(7)
    ref = create_model(cfg.model.name)
    assert torch.equal(ref.state_dict()["pos_embed"], a.state_dict()["pos_embed"])


def test_headline_bolds_the_better_encoder_and_reports_rankme() -> None:
    from terrafm.quickstart.report import _headline_table, _rank_note

    rows = _headline_table(
        {
            "knn_top1_pretrained": 60.0,
            "knn_top1_random": 50.0,
            "miou_pretrained": 30.0,
            "miou_random": 35.5,
        }
    )
    knn = next(r for r in rows if r.startswith("| kNN top-1, 1 % of labels, S2"))
    miou = next(r for r in rows if r.startswith("| segmentation probe mIoU, S2"))
    assert knn == "| kNN top-1, 1 % of labels, S2 L2A | **60.0** | 50.0 | +10.0 | — |"
    assert miou == "| segmentation probe mIoU, S2 L2A | 30.0 | **35.5** | -5.5 | — |"
    assert len(rows) == 4  # metrics measured by neither encoder are left out
    with_px = _headline_table({"miou_pretrained": 30.0, "miou_random": 35.5, "miou_pixels": 70.1})
    assert with_px[-1] == "| segmentation probe mIoU, S2 L2A | 30.0 | **35.5** | -5.5 | 70.1 |"
    res = {
        "pretrained": {"s2_l2a": {"rankme_cls": 5.64, "rankme_patch": 8.8, "dim": 96}},
        "random": {"s2_l2a": {"rankme_cls": 14.1, "rankme_patch": 44.5, "dim": 96}},
    }
    note = "".join(_rank_note(res))
    assert "CLS 5.6 pretrained vs 14.1 random init" in note and "8.8 vs 44.5" in note
    assert _rank_note({"pretrained": {}, "random": {}}) == []


def test_in_short_sorts_every_measured_metric_against_random_init() -> None:
    from terrafm.quickstart.report import _verdict

    lines = _verdict(
        {
            "knn_top1_pretrained": 60.0,  # +10: higher
            "knn_top1_random": 50.0,
            "linear_top1_pretrained": 80.0,  # -0.5: level
            "linear_top1_random": 80.5,
            "linear_top1_pixels": 85.0,  # the control beats both
            "miou_pretrained": 30.0,  # -5.5: lower
            "miou_random": 35.5,
            "knn_top1_fused_to_s2_pretrained": 49.8,  # a cross-sensor metric counts too
            "knn_top1_fused_to_s2_random": 39.6,
            "retrieval_r1_s1_to_s2_pretrained": 1.1,  # chance is not a control
            "retrieval_r1_s1_to_s2_random": 1.1,
            "retrieval_chance_r1": 5.0,
            "knn_top1_full_pretrained": 70.0,  # measured for one encoder only: left out
        }
    )
    text = "\n".join(lines)
    assert lines[0].startswith("Of 5 measured metrics") and "on 2, level" in lines[0]
    assert "level (within 1 point) on 2 and lower on 1:" in lines[0]
    higher = next(x for x in lines if x.startswith("- **higher**"))
    assert "kNN top-1, 1 % of labels, S2 L2A (+10.0)" in higher
    assert "trained fused, tested S2 L2A only (+10.2)" in higher
    assert next(x for x in lines if x.startswith("- **level**")).count("(") == 2
    assert "segmentation probe mIoU, S2 L2A (-5.5)" in text
    beaten = next(x for x in lines if x.startswith("- **raw pixels beat both"))
    assert "linear probe top-1, S2 L2A (85.0 against 80.0 / 80.5)" in beaten
    assert "retrieval" not in beaten
    assert "RankMe" in lines[-1]  # a loss comes with the reading of it
    no_loss = _verdict({"knn_top1_pretrained": 60.0, "knn_top1_random": 50.0})
    assert not any("RankMe" in x for x in no_loss) and not any("pixels" in x for x in no_loss)
    assert _verdict({}) == []
