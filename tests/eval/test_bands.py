"""Band mapping by name and the documented imputation (docs/design.md, "Sensors and units", "Evaluation protocols / GEO-Bench v1")."""

from __future__ import annotations

import numpy as np
import pytest

from terrafm.eval.bands import plan_bands
from terrafm.sensors import BandError, get_sensor

STEM = list(get_sensor("s2_l2a").band_names)


def test_reorders_by_name_and_drops_b10():
    eurosat = [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B09",
        "B10",
        "B11",
        "B12",
        "B8A",
    ]
    plan = plan_bands("s2_l1c", eurosat)
    x = np.arange(13, dtype=np.float32)[:, None, None] * np.ones((13, 2, 2), np.float32)
    out = plan.apply(x)
    # stem order B01..B08, B8A, B09, B11, B12: B8A comes from the last file band (index 12)
    assert out[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 12, 8, 10, 11]
    assert plan.imputed == {} and plan.ignored == ("B10",)


def test_spec_imputation_examples_copy_the_nearest_band():
    so2sat = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    plan = plan_bands("s2_l1c", so2sat)
    assert plan.imputed == {"B01": "B02", "B09": "B8A"}
    x = np.arange(10, dtype=np.float32)[:, None, None]
    out = plan.apply(x)[:, 0, 0].tolist()
    assert out[STEM.index("B01")] == 0 and out[STEM.index("B09")] == so2sat.index("B8A")
    l4s = [
        "B1",
        "B2",
        "B3",
        "B4",
        "B5",
        "B6",
        "B7",
        "B8",
        "B9",
        "B10",
        "B11",
        "B12",
        "SLOPE",
        "DEM",
    ]
    assert plan_bands("s2_l1c", l4s).imputed == {"B8A": "B08"}
    kiln = [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B07",
        "B8A",
        "B08",
        "B11",
        "B12",
        "TCI_R",
        "TCI_G",
        "TCI_B",
    ]
    p = plan_bands("s2_l1c", kiln)
    assert p.imputed == {"B06": "B05", "B09": "B8A"} and p.ignored == ("TCI_R", "TCI_G", "TCI_B")


def test_b10_is_never_an_imputation_source():
    bands = [b for b in STEM if b not in ("B09", "B11")] + ["B10"]
    plan = plan_bands("s2_l1c", bands)
    assert plan.imputed == {"B09": "B8A", "B11": "B12"}


def test_unmappable_band_sets_are_clear_errors():
    with pytest.raises(BandError, match=r"4 band\(s\) missing"):
        plan_bands("s2_l2a", STEM[:8])
    with pytest.raises(BandError, match="VH"):
        plan_bands("s1", ["VV"])
    with pytest.raises(BandError, match="none of the dataset's bands"):
        plan_bands("s2_l2a", ["VV", "VH"])
    with pytest.raises(BandError, match="duplicate"):
        plan_bands("s1", ["VV", "vv", "VH"])
    plan = plan_bands("s1", ["VH", "VV"])
    with pytest.raises(BandError, match="3 channels but 2 bands"):
        plan.apply(np.zeros((3, 2, 2)))
