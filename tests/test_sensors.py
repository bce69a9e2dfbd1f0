import numpy as np
import pytest
import torch

from terrafm.sensors import (
    SENSORS,
    BandError,
    band_indices,
    canonical_band_name,
    get_sensor,
    linear_to_db,
    normalize,
)

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
EUROSAT = [
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


def test_band_facts():
    s2 = get_sensor("s2_l2a")
    assert s2.band_names == tuple(S2)
    assert {b.name for b in s2.bands if b.gsd == 10} == {"B02", "B03", "B04", "B08"}
    assert {b.name for b in s2.bands if b.gsd == 60} == {"B01", "B09"}
    assert get_sensor("s1").band_names == ("VV", "VH")
    assert get_sensor("s1").unit == "dB"
    # docs/design.md, "Sensors and units": L1C statistics are the 13-band ones with the B10 entry (506.1 / 442.2) dropped.
    l1c = get_sensor("s2_l1c").stats
    assert len(l1c.mean) == 12 and 506.1 not in l1c.mean and 442.2 not in l1c.std
    assert l1c.mean[9] == 1473.8 and l1c.mean[10] == 2472.8
    assert SENSORS["s2_l2a"].stats.mean[0] == 1390.5
    assert SENSORS["s1"].stats.mean == (-10.93, -17.33)


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("B2", "B02"),
        ("b02", "B02"),
        ("B8A", "B8A"),
        ("B08A", "B8A"),
        ("8A", "B8A"),
        ("08A - Vegetation Red Edge", "B8A"),
        ("02 - Blue", "B02"),
        ("vv", "VV"),
        ("VH_dB", "VH"),
        ("B10", "B10"),
    ],
)
def test_canonical_names(raw, canon):
    assert canonical_band_name(raw) == canon


def test_eurosat_order_is_mapped_by_name():
    # EuroSAT-MS puts B8A last and carries B10: both handled by name.
    x = torch.arange(13, dtype=torch.float32).view(13, 1, 1).expand(13, 2, 2)
    out = normalize(x, "s2_l1c", EUROSAT)
    st = get_sensor("s2_l1c").stats
    expected_raw = torch.tensor([EUROSAT.index(b) for b in S2], dtype=torch.float32)
    expected = (expected_raw - torch.tensor(st.mean)) / torch.tensor(st.std)
    torch.testing.assert_close(out[:, 0, 0], expected)
    assert band_indices("s2_l1c", EUROSAT)[8] == 12  # B8A comes from the last channel


def test_normalize_reference_values_numpy_and_batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10000, size=(2, 12, 4, 4)).astype(np.uint16)
    out = normalize(x, "s2_l2a")
    st = get_sensor("s2_l2a").stats
    ref = (x.astype(np.float64) - np.array(st.mean)[:, None, None]) / np.array(st.std)[
        :, None, None
    ]
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32


def test_boa_offset():
    x = torch.full((12, 1, 1), 2390.5)
    out = normalize(x, "s2_l2a", boa_offset=True)
    assert abs(out[0, 0, 0].item()) < 1e-6  # 2390.5 - 1000 = mean of B01
    with pytest.raises(BandError, match="s2_l2a only"):
        normalize(x, "s2_l1c", boa_offset=True)


def test_s1_linear_to_db():
    lin = torch.tensor([[[0.1]], [[0.01]], [[0.0]]])[:2]
    out = normalize(lin, "s1", ["vv", "vh"], s1_unit="linear")
    assert out[0, 0, 0].item() == pytest.approx((-10.0 + 10.93) / 4.39, abs=1e-5)
    assert out[1, 0, 0].item() == pytest.approx((-20.0 + 17.33) / 4.46, abs=1e-5)
    # zero power is floored, never -inf
    assert torch.isfinite(linear_to_db(torch.zeros(3))).all()
    assert np.isclose(linear_to_db(np.array([1.0]))[0], 0.0)


def test_s1_reordered_by_name():
    x = torch.stack([torch.full((2, 2), -20.0), torch.full((2, 2), -10.0)])  # VH, VV
    out = normalize(x, "s1", ["VH", "VV"])
    assert out[0, 0, 0].item() == pytest.approx((-10.0 + 10.93) / 4.39, abs=1e-5)


def test_errors_name_sensor_and_bands():
    x = torch.zeros(11, 4, 4)
    with pytest.raises(BandError, match=r"s2_l2a.*missing band\(s\) \['B12'\]"):
        normalize(x, "s2_l2a", S2[:-1])
    with pytest.raises(BandError, match=r"unknown band name\(s\) \['B13'\]"):
        normalize(torch.zeros(12, 4, 4), "s2_l2a", [*S2[:-1], "B13"])
    with pytest.raises(BandError, match=r"input has 11 channels"):
        normalize(x, "s2_l2a")
    with pytest.raises(BandError, match=r"input has 11 channels but bands"):
        normalize(x, "s2_l2a", S2)
    with pytest.raises(BandError, match="duplicate"):
        normalize(torch.zeros(12, 4, 4), "s2_l2a", [*S2[:-1], "B11"])
    with pytest.raises(BandError, match="unknown sensor"):
        normalize(x, "landsat")
    with pytest.raises(BandError, match="B10"):
        # B10 is only an accepted extra for L1C; L2A has no B10.
        normalize(torch.zeros(13, 4, 4), "s2_l2a", EUROSAT)
