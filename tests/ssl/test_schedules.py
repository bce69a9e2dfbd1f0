"""Per-step schedules (docs/design.md, "Objective", DINO v1 recipe)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from terrafm.ssl.schedules import Schedules, cosine_schedule, linear_warmup_constant


def test_cosine_schedule_endpoints_and_shape() -> None:
    s = cosine_schedule(1.0, 0.1, 100, warmup_steps=10)
    assert s.shape == (100,)
    assert s[0] == 0.0
    assert s[5] == pytest.approx(0.5)  # linear warm-up
    assert s[10] == pytest.approx(1.0)  # peak right after warm-up
    assert s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[10:]) <= 1e-12)  # monotone decay
    # Half-cosine midpoint: t = 0.5 -> final + (base - final) / 2.
    mid = cosine_schedule(1.0, 0.0, 101)
    assert mid[50] == pytest.approx(0.5)
    assert mid[25] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_without_warmup_and_increasing() -> None:
    m = cosine_schedule(0.996, 1.0, 50)
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0)
    assert np.all(np.diff(m) >= 0)
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, 0)


def test_teacher_temperature_warmup() -> None:
    t = linear_warmup_constant(0.04, 0.06, 40, 30)
    assert t[0] == pytest.approx(0.04)
    assert t[29] == pytest.approx(0.06)
    assert np.all(t[30:] == 0.06)
    assert np.all(np.diff(t) >= 0)
    # Warm-up longer than the run is clipped, not an error.
    assert linear_warmup_constant(0.04, 0.06, 5, 30).shape == (5,)


def test_schedules_build_in_epochs() -> None:
    s = Schedules.build(
        epochs=4,
        steps_per_epoch=5,
        lr=1e-3,
        min_lr=1e-6,
        warmup_epochs=1,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum=0.996,
        momentum_end=1.0,
        warmup_teacher_temp=0.04,
        teacher_temp=0.06,
        warmup_teacher_temp_epochs=2,
        freeze_last_layer_epochs=1,
    )
    assert s.total_steps == 20
    assert s.freeze_last_layer_steps == 5
    assert s.at(5)["lr"] == pytest.approx(1e-3)
    assert s.at(19)["lr"] == pytest.approx(1e-6)
    assert s.at(0)["wd"] == pytest.approx(0.04) and s.at(19)["wd"] == pytest.approx(0.4)
    assert s.at(9)["teacher_temp"] == pytest.approx(0.06)
    assert s.at(1000) == s.at(19)  # clamped
    # Pure: rebuilding gives identical arrays.
    s2 = Schedules.build(**_args())
    s3 = Schedules.build(**_args())
    np.testing.assert_array_equal(s2.lr, s3.lr)


def _args() -> dict:
    return dict(
        epochs=3,
        steps_per_epoch=7,
        lr=5e-4,
        min_lr=1e-6,
        warmup_epochs=1,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum=0.996,
        momentum_end=1.0,
        warmup_teacher_temp=0.04,
        teacher_temp=0.06,
        warmup_teacher_temp_epochs=1,
        freeze_last_layer_epochs=0,
    )
