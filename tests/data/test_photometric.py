"""Per-view photometric jitter (docs/pretraining.md, "Photometric jitter")."""

from __future__ import annotations

import pytest
import torch

from terrafm.config import PretrainConfig, load_config
from terrafm.data.photometric import PhotometricConfig, PhotometricJitter
from terrafm.errors import ConfigError
from terrafm.sensors import denormalize, get_sensor, normalize

B = 6


def _view(masks: dict[str, list[bool]] | None = None) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    raw = {
        "s2_l1c": torch.rand(B, 12, 8, 8, generator=g) * 3000 + 500,
        "s2_l2a": torch.rand(B, 12, 8, 8, generator=g) * 3000 + 200,
        "s1": torch.randn(B, 2, 8, 8, generator=g) * 3 - 12,
    }
    z = {s: normalize(v, s) for s, v in raw.items()}
    m = masks or {s: [True] * B for s in raw}
    view = {"inputs": z, "masks": {s: torch.tensor(v) for s, v in m.items()}}
    return raw, view


def _fit_affine(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``y = g x + h`` per channel of (C, H, W) tensors (a plain second computation)."""
    xs, ys = x.flatten(1).double(), y.flatten(1).double()
    xc, yc = xs - xs.mean(1, keepdim=True), ys - ys.mean(1, keepdim=True)
    g = (xc * yc).sum(1) / (xc * xc).sum(1)
    return g, ys.mean(1) - g * xs.mean(1)


def test_physical_effect_matches_the_stated_model() -> None:
    cfg = PhotometricConfig(prob=1.0, brightness=0.3, band_gain=0.1, haze=0.05, s1_db=2.0,
                            s1_pol_db=1.0)  # fmt: skip
    raw, view = _view()
    out = PhotometricJitter(cfg, seed=3)({"teacher": [view]}, step=7)["teacher"][0]["inputs"]
    wl = torch.tensor([b.wavelength for b in get_sensor("s2_l2a").bands], dtype=torch.float64)
    for b in range(B):
        phys = {s: denormalize(out[s][b], s) for s in out}
        g2, h2 = _fit_affine(raw["s2_l2a"][b], phys["s2_l2a"])
        g1, h1 = _fit_affine(raw["s2_l1c"][b], phys["s2_l1c"])
        # one acquisition: L1C and L2A share the draws
        torch.testing.assert_close(g1, g2, atol=1e-4, rtol=0)
        torch.testing.assert_close(h1, h2, atol=0.5, rtol=0)
        assert ((g2 > 0.7 * 0.9 - 1e-4) & (g2 < 1.3 * 1.1 + 1e-4)).all()
        # the path term: non-negative, at most 5 % reflectance at 490 nm, falling as lambda^-1.3
        assert (h2 > -0.5).all() and (h2 < 0.05 * 10000 * (0.443 / 0.49) ** -1.3 + 0.5).all()
        if h2[1] > 5:  # B02
            torch.testing.assert_close(h2 / h2[1], (wl / 0.49) ** -1.3, atol=5e-3, rtol=0)
        # radar: a pure offset in dB, within the ranges
        d = phys["s1"] - raw["s1"][b]
        assert d.flatten(1).std(1).max() < 1e-3
        assert (d.mean((1, 2)).abs() <= 3.0 + 1e-4).all()


def test_off_views_and_absent_sensors_are_unchanged_and_inputs_untouched() -> None:
    masks = {"s2_l1c": [False] * B, "s2_l2a": [True, False] * 3, "s1": [True] * B}
    _, view = _view(masks)
    before = {s: t.clone() for s, t in view["inputs"].items()}
    out = PhotometricJitter(PhotometricConfig(prob=1.0), 0)({"teacher": [view]}, step=0)
    new = out["teacher"][0]["inputs"]
    for s in before:  # the batch's own tensors are never modified (views may share them)
        assert torch.equal(view["inputs"][s], before[s])
    assert torch.equal(new["s2_l1c"], before["s2_l1c"])  # sensor absent from every sample
    for b in range(B):
        same = torch.equal(new["s2_l2a"][b], before["s2_l2a"][b])
        assert same == (not masks["s2_l2a"][b])
    off = PhotometricJitter(PhotometricConfig(prob=0.0), 0)({"teacher": [view]}, step=0)
    assert off["teacher"][0] is view


def test_draws_depend_on_seed_step_rank_and_view_only() -> None:
    _, view = _view()
    batch = {"teacher": [view, view], "student_global": [view], "student_local": []}
    j = PhotometricJitter(PhotometricConfig(prob=1.0), seed=1)
    a, again = j(batch, step=5), j(batch, step=5)
    for key in ("teacher", "student_global"):
        for va, vb in zip(a[key], again[key]):
            assert all(torch.equal(va["inputs"][s], vb["inputs"][s]) for s in va["inputs"])
    t0, t1 = (v["inputs"]["s2_l2a"] for v in a["teacher"])
    assert not torch.equal(t0, t1)  # two views of one sample: independent acquisitions
    for other in (j(batch, step=6), j(batch, step=5, rank=1),
                  PhotometricJitter(PhotometricConfig(prob=1.0), seed=2)(batch, step=5)):  # fmt: skip
        assert not torch.equal(other["teacher"][0]["inputs"]["s1"], a["teacher"][0]["inputs"]["s1"])


def test_prob_selects_about_that_share_of_views() -> None:
    _, view = _view()
    j = PhotometricJitter(PhotometricConfig(prob=0.5), seed=0)
    changed = 0
    for step in range(60):
        out = j({"teacher": [view]}, step=step)["teacher"][0]["inputs"]["s1"]
        changed += int(sum(not torch.equal(out[b], view["inputs"]["s1"][b]) for b in range(B)))
    assert 0.38 < changed / (60 * B) < 0.62


@pytest.mark.parametrize(
    ("override", "match"),
    [("prob=1.5", "prob"), ("brightness=1.0", "brightness"), ("haze=-0.1", "haze")],
)
def test_config_rejects_bad_ranges(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(PretrainConfig, None, [f"data.photometric.{override}"])


def test_off_in_every_shipped_config() -> None:
    from terrafm.config import shipped_config

    for name in ("pretrain_quickstart", "pretrain_tiny_cpu", "pretrain_base_majortom",
                 "pretrain_large_majortom"):  # fmt: skip
        cfg = load_config(PretrainConfig, shipped_config(name))
        assert not cfg.data.photometric.enabled, name
