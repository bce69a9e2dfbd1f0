"""Multi-crop views: geometry shared by all sensors, sensor draws, determinism, contract B."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_majortom import make_root, native_size

from terrafm.data.loader import build_pretrain_loader
from terrafm.data.multicrop import (
    MultiCrop,
    MultiCropConfig,
    crop_views,
    draw_sensors,
    random_resized_box,
)
from terrafm.sensors import denormalize

SMALL = MultiCropConfig(global_size=32, local_size=16, n_local=3)
SENSORS = ("s1", "s2_l1c", "s2_l2a")


def _ramp(n: int) -> np.ndarray:
    """A plane in pixel coordinates: f(y, x) = 10 x + 3 y (distinct along both axes)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    return 10 * x + 3 * y


def _ramp_band(product: str, band: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Every sensor carries the same plane f on the 10 m grid: S2 DN = 1000 + f, S1 dB = f / 100 - 20."""
    m = native_size(band, n)
    if band == "cloud_mask":
        return np.zeros((m, m), np.uint8)
    f = _ramp(n)[:: n // m, :: n // m] if m != n else _ramp(n)
    if product == "S1RTC":
        return (10 ** ((f / 100 - 20) / 10)).astype(np.float32)
    return (1000 + f).astype(np.uint16)


def test_one_crop_box_for_all_sensors_end_to_end(tmp_path: Path) -> None:
    """Crops of the same plane written into every sensor's files agree after denormalisation."""
    make_root(tmp_path, ["1U_1R", "2U_2R"], size=96, band_fn=_ramp_band)
    views = MultiCropConfig(global_size=32, local_size=16, n_local=2, sensor_draw="all")
    loader = build_pretrain_loader([tmp_path], SENSORS, 4, views=views, seed=5)
    batch = next(iter(loader))
    flips = 0
    for view in batch["teacher"] + batch["student_global"] + batch["student_local"]:
        x = view["inputs"]
        s1 = torch.stack([denormalize(v, "s1") for v in x["s1"]])[:, 0]  # VV in dB
        for key in ("s2_l1c", "s2_l2a"):
            s2 = torch.stack([denormalize(v, key) for v in x[key]])[:, 1]  # B02 DN
            torch.testing.assert_close(s2 - 1000, (s1 + 20) * 100, atol=0.05, rtol=1e-4)
        dx = (x["s2_l2a"][:, 1, :, 1:] - x["s2_l2a"][:, 1, :, :-1]).mean(dim=(1, 2))
        flips += int((dx < 0).sum())  # the plane rises to the right unless flipped
    assert 0 < flips < 4 * 7  # some views flipped, not all


def test_crop_views_geometry_and_flip() -> None:
    ramp = torch.from_numpy(_ramp(64)).float()
    inputs = {"a": ramp[None], "b": torch.stack([2 * ramp + 1, -ramp])}
    out = crop_views(inputs, (8, 16, 32, 32), 32, flip=False)  # same size: an exact cut
    torch.testing.assert_close(out["a"][0], ramp[8:40, 16:48])
    torch.testing.assert_close(out["b"][0], 2 * out["a"][0] + 1)
    torch.testing.assert_close(out["b"][1], -out["a"][0])
    flipped = crop_views(inputs, (8, 16, 32, 32), 32, flip=True)
    torch.testing.assert_close(flipped["a"][0], out["a"][0].flip(-1))
    small = crop_views(inputs, (0, 0, 64, 64), 16, flip=False)
    torch.testing.assert_close(small["b"][0], 2 * small["a"][0] + 1, atol=1e-3, rtol=1e-5)


def test_random_resized_box_respects_scale_and_ratio() -> None:
    rng = np.random.default_rng(0)
    for scale in ((0.25, 1.0), (0.05, 0.25)):
        for _ in range(300):
            top, left, h, w = random_resized_box(rng, 534, 534, scale)
            assert 0 <= top and top + h <= 534 and 0 <= left and left + w <= 534
            assert scale[0] - 0.01 <= h * w / 534**2 <= scale[1] + 0.01
            assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_independent_draw_is_uniform_over_nonempty_subsets() -> None:
    rng = np.random.default_rng(1)
    n = 14000
    subsets = Counter(draw_sensors(rng, SENSORS, "independent") for _ in range(n))
    assert len(subsets) == 7 and () not in subsets
    for count in subsets.values():
        assert abs(count / n - 1 / 7) < 0.015


def test_all_or_one_draw() -> None:
    rng = np.random.default_rng(2)
    n = 12000
    subsets = Counter(draw_sensors(rng, SENSORS, "all_or_one") for _ in range(n))
    assert set(subsets) == {SENSORS, ("s1",), ("s2_l1c",), ("s2_l2a",)}
    assert abs(subsets[SENSORS] / n - 0.5) < 0.02
    assert abs(subsets[("s1",)] / n - 1 / 6) < 0.02
    assert draw_sensors(rng, SENSORS, "all") == SENSORS
    ones = Counter(draw_sensors(rng, SENSORS, "one") for _ in range(3000))
    assert set(ones) == {("s1",), ("s2_l1c",), ("s2_l2a",)} and min(ones.values()) > 900
    assert draw_sensors(rng, ["s1"], "independent") == ("s1",)
    with pytest.raises(ValueError, match="sensor draw"):
        draw_sensors(rng, SENSORS, "some")


def test_teacher_and_student_draw_independently_on_the_same_crops() -> None:
    tile = {s: torch.randn(c, 48, 48) for s, c in (("s1", 2), ("s2_l1c", 12), ("s2_l2a", 12))}
    mc = MultiCrop(SMALL)
    differ = 0
    for seed in range(40):
        out = mc(tile, np.random.default_rng(seed))
        assert (
            len(out["teacher"]) == len(out["student_global"]) == 2
            and len(out["student_local"]) == 3
        )
        for t, s in zip(out["teacher"], out["student_global"]):
            for k in set(t["sensors"]) & set(s["sensors"]):
                assert torch.equal(t["inputs"][k], s["inputs"][k])  # same crop, same flip
            differ += t["sensors"] != s["sensors"]
        assert (
            out["student_local"][0]["inputs"][next(iter(out["student_local"][0]["inputs"]))].shape[
                -1
            ]
            == 16
        )
    assert differ > 20


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        MultiCropConfig(global_size=100)
    with pytest.raises(ValueError, match="local_scale"):
        MultiCropConfig(local_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="sensor_draw"):
        MultiCropConfig(sensor_draw="random")


def test_batch_contract_and_determinism(mt_root: Path) -> None:
    loader = build_pretrain_loader([mt_root], SENSORS, 4, views=SMALL, seed=3)
    ds = loader.dataset
    a, b = ds[(5, 1, 9)], ds[(5, 1, 9)]
    for va, vb in zip(a["student_local"], b["student_local"]):
        assert va["sensors"] == vb["sensors"]
        for k in va["inputs"]:
            assert torch.equal(va["inputs"][k], vb["inputs"][k])
    c = ds[(5, 2, 9)]
    assert (
        any(
            not torch.equal(c["teacher"][0]["inputs"][k], a["teacher"][0]["inputs"][k])
            for k in a["teacher"][0]["inputs"]
            if k in c["teacher"][0]["inputs"]
        )
        or c["teacher"][0]["sensors"] != a["teacher"][0]["sensors"]
    )
    batch = next(iter(loader))
    assert set(batch) == {"teacher", "student_global", "student_local", "landcover", "index"}
    assert batch["landcover"].dtype == torch.long and batch["index"].dtype == torch.long
    assert set(batch["landcover"].tolist()) <= {10, 30, 40, 50}
    for key, n, size in (("teacher", 2, 32), ("student_global", 2, 32), ("student_local", 3, 16)):
        assert len(batch[key]) == n
        for view in batch[key]:
            assert set(view["inputs"]) == set(view["masks"]) == set(SENSORS)
            for s, x in view["inputs"].items():
                assert (
                    x.shape == (4, 12 if s != "s1" else 2, size, size) and x.dtype == torch.float32
                )
                m = view["masks"][s]
                assert m.dtype == torch.bool and m.shape == (4,)
                assert (x[~m] == 0).all()
            assert torch.stack(list(view["masks"].values())).any(dim=0).all()  # >= 1 sensor each
