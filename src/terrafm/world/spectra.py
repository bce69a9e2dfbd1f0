"""Surface reflectance (Sentinel-2 L2A) of the synthetic world, per WorldCover class.

Each pixel is a mixture of endmember spectra (12 bands, DN = reflectance x 10000, docs/design.md, "Sensors and units") with
abundances drawn from the scene's structure: canopy crowns and gaps for tree cover, shrubs
speckled over soil, green-to-straw grassland, one crop state per field parcel (bare, emerging,
green, stubble) with row texture, roofs of several materials in street blocks, sand ripples and
rock on bare ground, clear-to-turbid water, pools in wetlands, topographic shading on snow.
Mixing endmembers is what gives real imagery its strong band-to-band correlation.

The vegetation, built-up and water endmembers are the EuroSAT-MS class means of docs/design.md, "Calibration of the synthetic world" (L1C)
inverted through the nominal atmosphere, so the generated L1C reproduces them; the rest (soil,
sand, rock, snow, roofs, asphalt, a closed crop canopy, moss, mangrove, wetland) follow the usual
library shapes:
vegetation's red edge, water dark in NIR/SWIR, bright soil rising into SWIR1, snow bright in the
visible and dark in SWIR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from terrafm.world.atmosphere import S2_BANDS, nominal_atmosphere
from terrafm.world.fields import smooth_fields
from terrafm.world.landcover import Scene

__all__ = [
    "EUROSAT_L1C_MEANS",
    "CellState",
    "endmembers",
    "surface_reflectance",
]

# Mean S2 L1C DN per EuroSAT-MS class, docs/design.md, "Calibration of the synthetic world" (bands in S2_BANDS order).
EUROSAT_L1C_MEANS: dict[str, tuple[float, ...]] = {
    "AnnualCrop": (1417, 1228, 1238, 1266, 1583, 2694, 3275, 3167, 3583, 913, 2501, 1632),
    "Forest": (1121, 817, 670, 409, 706, 1988, 2582, 2529, 2915, 741, 1263, 503),
    "HerbaceousVegetation": (
        1320,
        1113,
        1050,
        1058,
        1366,
        2000,
        2287,
        2298,
        2581,
        1034,
        2341,
        1437,
    ),
    "Highway": (1361, 1128, 1061, 999, 1285, 2170, 2561, 2491, 2815, 818, 1985, 1218),
    "Industrial": (1660, 1479, 1404, 1417, 1549, 2010, 2243, 2123, 2388, 598, 2102, 1545),
    "Pasture": (1260, 987, 943, 666, 1193, 2804, 3434, 3400, 3821, 1192, 2028, 985),
    "PermanentCrop": (1388, 1208, 1244, 1316, 1617, 2485, 2902, 2817, 3196, 841, 2720, 1757),
    "Residential": (1371, 1127, 1048, 972, 1244, 2086, 2443, 2358, 2655, 798, 1993, 1332),
    "River": (1281, 1010, 890, 680, 883, 1583, 1890, 1820, 2040, 587, 1244, 715),
    "SeaLake": (1217, 948, 776, 505, 517, 399, 400, 331, 311, 95, 112, 74),
}

# Surface spectra (DN) of materials EuroSAT lacks, B01..B12 with B8A after B08.
_LIBRARY: dict[str, tuple[float, ...]] = {
    "soil_bright": (900, 1000, 1300, 1650, 1850, 2000, 2150, 2300, 2400, 2450, 3200, 2700),
    "soil_dark": (500, 550, 700, 850, 950, 1050, 1120, 1200, 1260, 1300, 1800, 1450),
    "sand": (1500, 1700, 2300, 3000, 3300, 3450, 3600, 3700, 3800, 3850, 4600, 4000),
    "rock": (1100, 1200, 1350, 1450, 1500, 1550, 1600, 1650, 1700, 1700, 1900, 1700),
    "snow": (9000, 9200, 9100, 8900, 8700, 8400, 8100, 7800, 7500, 6400, 1500, 800),
    "old_snow": (6500, 6600, 6400, 6000, 5700, 5200, 4800, 4400, 4000, 3000, 500, 300),
    "straw": (700, 800, 1100, 1500, 1750, 2000, 2200, 2350, 2450, 2500, 3300, 2400),
    "shrub": (350, 450, 750, 700, 1200, 2100, 2500, 2700, 2800, 2800, 2300, 1300),
    "conifer": (180, 220, 330, 200, 550, 1400, 1800, 1900, 2000, 1950, 950, 400),
    "asphalt": (700, 750, 800, 850, 870, 900, 920, 950, 970, 980, 1050, 950),
    "concrete": (1900, 2100, 2300, 2450, 2500, 2550, 2600, 2650, 2700, 2700, 2900, 2700),
    "roof_tile": (700, 800, 1000, 2000, 2200, 2300, 2400, 2500, 2550, 2550, 2900, 2500),
    "roof_metal": (2800, 3000, 3100, 3150, 3150, 3150, 3150, 3150, 3150, 3100, 2600, 2200),
    "moss": (600, 700, 1000, 1100, 1400, 1900, 2100, 2250, 2300, 2300, 2100, 1500),
    "water_clear": (500, 450, 400, 200, 150, 100, 90, 80, 70, 60, 30, 20),
    "water_turbid": (650, 700, 900, 800, 750, 430, 380, 330, 300, 270, 60, 40),
    "crop_canopy": (250, 300, 550, 280, 850, 2600, 3500, 3900, 4050, 4000, 2100, 950),
    "mangrove": (200, 250, 450, 250, 700, 2000, 2500, 2600, 2700, 2650, 1100, 450),
    "wetland_veg": (300, 400, 650, 500, 1000, 2000, 2400, 2500, 2600, 2550, 1700, 900),
}
# Thick (water) cloud, before texture: flat in the visible, darker in SWIR.
CLOUD = (5600, 5500, 5400, 5300, 5300, 5200, 5200, 5100, 5100, 4600, 3300, 2200)


@lru_cache(maxsize=1)
def endmembers() -> dict[str, np.ndarray]:
    """Every endmember surface spectrum, float32 (12,) DN, keyed by name.

    EuroSAT classes appear as ``eurosat_<Class>``: their L1C means inverted through
    :func:`~terrafm.world.atmosphere.nominal_atmosphere` (floored at 5 DN).
    """
    atm = nominal_atmosphere()
    path, trans = atm.path(), atm.transmittance()
    out = {k: np.asarray(v, dtype=np.float32) for k, v in _LIBRARY.items()}
    for name, toa in EUROSAT_L1C_MEANS.items():
        out[f"eurosat_{name}"] = np.maximum((np.asarray(toa, np.float32) - path) / trans, 5.0)
    return out


@dataclass(frozen=True)
class CellState:
    """Scene-wide conditions that shape a cell's spectra.

    Attributes:
        greenness: 0 (dormant / dry season) .. 1 (peak growing season) for herbaceous cover.
        leaf_on: 0 .. 1 for deciduous trees.
        conifer: share of needle-leaf trees in tree cover.
        aridity: 0 .. 1, brightens and dries soils and sparse vegetation.
        seasonal_snow: 0 .. 1 fraction of open land under seasonal snow.
    """

    greenness: float
    leaf_on: float
    conifer: float
    aridity: float
    seasonal_snow: float = 0.0


# Dirichlet concentration of a cell's crop calendar around the season's field-state mix: low
# enough that the spread of cropland chips' mean NDVI matches real EuroSAT-MS AnnualCrop chips
# (docs/synthetic_world.md, "Within-class variation").
CROP_CALENDAR_CONCENTRATION = 1.5
# Point-spread function of the 10 m bands: a 3-tap kernel per axis (a Gaussian of about 0.6 px),
# so class boundaries come out as mixed pixels and neighbouring pixels correlate like real scenes.
PSF_TAPS = (0.166, 0.668, 0.166)


def _soil(em: dict[str, np.ndarray], rng: np.random.Generator, st: CellState) -> None:
    """Replace the soil endmembers, in place, by the cell's own soil: dry brightness, iron
    (reddening: weaker blue and green) and moisture (darker, most in SWIR), drawn per cell."""
    bright = float(rng.lognormal(0.0, 0.2))
    iron = float(rng.uniform(0.0, 1.0))
    wet = float(np.clip(rng.normal(0.3 - 0.3 * st.aridity, 0.2), 0.0, 0.8))
    f = np.full(len(S2_BANDS), bright * (1.0 - 0.4 * wet), dtype=np.float32)
    f[[S2_BANDS.index("B11"), S2_BANDS.index("B12")]] = bright * (1.0 - 0.6 * wet)
    f[[S2_BANDS.index(b) for b in ("B01", "B02", "B03")]] *= 1.0 - iron * np.array(
        [0.45, 0.4, 0.25], dtype=np.float32
    )
    for k in ("soil_bright", "soil_dark"):
        em[k] = em[k] * f


def _psf(x: np.ndarray) -> np.ndarray:
    """The 10 m point-spread function on (C, H, W), edges replicated."""
    a, b, c = PSF_TAPS
    for axis in (1, 2):
        lo = np.concatenate(
            [np.take(x, [0], axis), np.take(x, range(x.shape[axis] - 1), axis)], axis
        )
        hi = np.concatenate(
            [np.take(x, range(1, x.shape[axis]), axis), np.take(x, [-1], axis)], axis
        )
        x = a * lo + b * x + c * hi
    return x.astype(np.float32)


def _mix(*parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Sum of abundance (N,) x spectrum (12,) -> (N, 12)."""
    return sum(a[:, None].astype(np.float32) * e[None, :] for a, e in parts)  # type: ignore[return-value]


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Texture:
    """Per-cell texture fields drawn once, zero mean and unit variance, by correlation scale."""

    SCALES: ClassVar[dict[str, float]] = {
        "crown": 1.0,
        "fine": 0.7,
        "mid": 2.5,
        "patch": 6.0,
        "large": 22.0,
    }

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        f = smooth_fields(rng, len(self.SCALES), size, np.array(list(self.SCALES.values())))
        self._grid = dict(zip(self.SCALES, f))

    def __getitem__(self, k: str) -> np.ndarray:
        """The field flattened to (S * S,), indexed like the flattened class map."""
        return self._grid[k].reshape(-1)

    def grid(self, k: str) -> np.ndarray:
        """The field as (S, S)."""
        return self._grid[k]


def _tree(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, st: CellState) -> np.ndarray:
    broad = em["eurosat_Forest"]
    bare_twigs = 0.35 * em["straw"] + 0.35 * em["soil_dark"]  # branches, litter, their shadows
    decid = st.leaf_on * broad + (1 - st.leaf_on) * bare_twigs
    cf = np.clip(st.conifer + 0.25 * t["large"][i], 0, 1)
    gap = np.clip(0.08 + 0.07 * t["mid"][i], 0, 0.35)
    under = em["eurosat_Pasture"] * st.greenness + em["straw"] * (1 - st.greenness)
    r = _mix(((1 - cf) * (1 - gap), decid), (cf * (1 - gap), em["conifer"]), (gap, under))
    crown = 1.0 + 0.2 * t["crown"][i]  # sunlit crowns and their shadows
    return r * crown[:, None]


def _shrub(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, st: CellState) -> np.ndarray:
    v = np.clip(0.5 - 0.25 * st.aridity + 0.35 * t["fine"][i] + 0.1 * t["large"][i], 0.05, 0.95)
    soil = em["sand"] * st.aridity + em["soil_bright"] * (1 - st.aridity)
    leaf = em["shrub"] * (0.5 + 0.5 * st.greenness) + em["straw"] * (0.5 - 0.5 * st.greenness)
    return _mix((v, leaf), (1 - v, soil))


def _grass(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, st: CellState) -> np.ndarray:
    g = np.clip(st.greenness + 0.12 * t["large"][i] + 0.04 * t["mid"][i], 0, 1)
    soil = np.clip(0.05 + 0.2 * st.aridity + 0.03 * t["patch"][i], 0, 0.6)
    green, dry = em["eurosat_Pasture"], em["straw"]
    return _mix(((1 - soil) * g, green), ((1 - soil) * (1 - g), dry), (soil, em["soil_bright"]))


def _crop(
    rng: np.random.Generator,
    em: dict[str, np.ndarray],
    t: _Texture,
    i: np.ndarray,
    st: CellState,
    parcels: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """One state per field: bare soil, emerging, green crop or stubble; plus sowing rows."""
    n = int(parcels.max()) + 1
    g = st.greenness
    p_state = np.array([0.15 + 0.35 * (1 - g), 0.2, 0.15 + 0.55 * g, 0.2 * (1 - g) + 0.1])
    # A region's fields follow one crop calendar: the cell draws its own mix of field states
    # around the season's (docs/synthetic_world.md, "Within-class variation"), so whole cells
    # are mostly bare, mostly green or mostly stubble, not the same average everywhere.
    q = rng.dirichlet(CROP_CALENDAR_CONCENTRATION * p_state / p_state.sum()) + 1e-6
    state = rng.choice(4, size=n, p=q / q.sum())
    cover = np.array([0.03, 0.35, 0.92, 0.15])[state] + rng.normal(0, 0.06, n)
    straw = np.array([0.0, 0.0, 0.0, 0.8])[state]
    dark = rng.uniform(0, 1, n)  # soil moisture / organic matter per field
    pid = parcels[i]
    c = np.clip(cover[pid] + 0.12 * rows[i] * (cover[pid] < 0.8) + 0.03 * t["fine"][i], 0, 1)
    s = straw[pid] * (1 - c)
    d = dark[pid]
    # A closed crop canopy at its peak (NDVI near 0.85, as dense green crops reach), not the
    # EuroSAT AnnualCrop mean, which already averages bare and green fields.
    green = em["crop_canopy"]
    soil_part = 1 - c - s
    return _mix(
        (c, green),
        (s, em["straw"]),
        (soil_part * d, em["soil_dark"]),
        (soil_part * (1 - d), em["soil_bright"]),
    )


def _built(
    rng: np.random.Generator,
    em: dict[str, np.ndarray],
    t: _Texture,
    i: np.ndarray,
    st: CellState,
    blocks: np.ndarray,
    paved: np.ndarray,
) -> np.ndarray:
    """Street blocks with one roof material each, buildings over gardens; streets are asphalt."""
    n = int(blocks.max()) + 1
    materials = np.stack([em["concrete"], em["roof_tile"], em["roof_metal"], em["asphalt"]])
    # Towns differ as a whole: dense cores and industrial estates against leafy suburbs, and
    # each its own mix of roofing (docs/synthetic_world.md, "Within-class variation").
    mix = rng.dirichlet(4.0 * np.array([0.38, 0.3, 0.1, 0.22]))
    mat = rng.choice(4, size=n, p=mix)
    town = rng.uniform(0.2, 0.9)
    density = np.clip(town + rng.normal(0.0, 0.12, n) + 0.1 * (mat == 2), 0.1, 1.0)
    bid = blocks[i]
    built = (t["mid"][i] + 2.5 * (density[bid] - 0.5)) > 0  # building footprints
    roof = built.astype(np.float32) * (0.85 + 0.15 * _sig(3 * t["fine"][i]))
    garden = em["eurosat_Pasture"] * st.greenness + em["straw"] * (1 - st.greenness)
    garden = 0.7 * garden + 0.3 * em["eurosat_Forest"]
    r = roof[:, None] * materials[mat[bid]] + (1 - roof)[:, None] * garden[None]
    street = paved[i]
    r[street] = 0.8 * em["asphalt"] + 0.2 * em["concrete"]
    return r


def _bare(
    em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, st: CellState, ripple: np.ndarray
) -> np.ndarray:
    sand = np.clip(st.aridity + 0.3 * t["large"][i], 0, 1)
    veg = np.clip(0.08 + 0.06 * t["patch"][i] - 0.06 * st.aridity, 0, 0.3)
    ground = _mix((sand, em["sand"]), (1 - sand, 0.6 * em["rock"] + 0.4 * em["soil_bright"]))
    ground = ground * (1.0 + 0.1 * ripple[i] * sand)[:, None]
    return ground * (1 - veg)[:, None] + veg[:, None] * em["straw"][None]


def _snow(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray) -> np.ndarray:
    fresh = np.clip(0.6 + 0.4 * t["large"][i], 0, 1)
    dirt = np.clip(0.05 + 0.05 * t["patch"][i], 0, 0.3)
    return _mix(
        (fresh * (1 - dirt), em["snow"]),
        ((1 - fresh) * (1 - dirt), em["old_snow"]),
        (dirt, em["rock"]),
    )


def _water(
    em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, river: np.ndarray, ocean: bool
) -> np.ndarray:
    turbid = np.clip(0.25 + 0.25 * t["large"][i] + 0.5 * river[i] - (0.2 if ocean else 0.0), 0, 1)
    r = _mix((turbid, em["water_turbid"]), (1 - turbid, em["water_clear"]))
    return r * (1.0 + 0.03 * t["fine"][i])[:, None]  # ripples


def _wetland(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray, st: CellState) -> np.ndarray:
    pool = np.clip(_sig(3.0 * (t["mid"][i] - 0.6)) + 0.1 * t["fine"][i], 0, 1)
    veg = em["wetland_veg"] * (0.4 + 0.6 * st.greenness) + em["straw"] * (0.6 - 0.6 * st.greenness)
    return _mix((1 - pool, veg), (pool, em["water_turbid"]))


def _mangrove(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray) -> np.ndarray:
    channel = np.clip(_sig(4.0 * (t["mid"][i] - 1.3)), 0, 1)
    r = _mix((1 - channel, em["mangrove"]), (channel, em["water_turbid"]))
    return r * (1.0 + 0.15 * t["crown"][i])[:, None]


def _moss(em: dict[str, np.ndarray], t: _Texture, i: np.ndarray) -> np.ndarray:
    rock = np.clip(_sig(2.5 * t["patch"][i]) * 0.6, 0, 1)
    return _mix((1 - rock, em["moss"]), (rock, em["rock"]))


def _hillshade(elevation: np.ndarray, relief: float, sun_azimuth: float) -> np.ndarray:
    """Relative illumination 1 + relief x slope-towards-sun, (S, S)."""
    gy, gx = np.gradient(elevation * relief * 60.0)  # relief 1: ~600 m across a few km
    az = math.radians(sun_azimuth)
    slope_to_sun = -(gx * math.sin(az) - gy * math.cos(az))
    return np.clip(1.0 + 0.5 * slope_to_sun, 0.35, 1.6).astype(np.float32)


def surface_reflectance(rng: np.random.Generator, scene: Scene, state: CellState) -> np.ndarray:
    """Cloud-free surface reflectance of a cell, before any sensor noise.

    Args:
        rng: random generator.
        scene: the cell's land-cover scene.
        state: season and climate conditions.

    Returns:
        float32 (12, S, S) DN (reflectance x 10000) in S2_BANDS order.
    """
    s = scene.size
    em = dict(endmembers())
    t = _Texture(rng, s)
    _soil(em, rng, state)
    codes = scene.codes.ravel()
    out = np.zeros((s * s, len(S2_BANDS)), dtype=np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    rows_theta, period = rng.uniform(0, np.pi), rng.uniform(2.2, 3.5)
    rows = np.sin(2 * np.pi * (xx * np.cos(rows_theta) + yy * np.sin(rows_theta)) / period).ravel()
    rip_theta, rip_period = rng.uniform(0, np.pi), rng.uniform(6.0, 14.0)
    warp = 4 * t.grid("large")
    ripple = np.sin(
        2 * np.pi * (xx * np.cos(rip_theta) + yy * np.sin(rip_theta) + warp) / rip_period
    ).ravel()
    for code in np.unique(codes):
        i = np.flatnonzero(codes == code)
        out[i] = _render_class(rng, int(code), em, t, i, state, scene, rows, ripple)
    refl = np.ascontiguousarray(out.T).reshape(len(S2_BANDS), s, s)
    refl *= (1.0 + 0.05 * t.grid("patch") + 0.04 * t.grid("large"))[None]  # moisture, BRDF
    refl *= _hillshade(scene.elevation, scene.relief, rng.uniform(120, 240))[None]
    if state.seasonal_snow > 0:
        refl = _add_seasonal_snow(refl, scene, state, t, em)
    return _psf(refl)


def _render_class(
    rng: np.random.Generator,
    code: int,
    em: dict[str, np.ndarray],
    t: _Texture,
    i: np.ndarray,
    st: CellState,
    scene: Scene,
    rows: np.ndarray,
    ripple: np.ndarray,
) -> np.ndarray:
    if code == 10:
        return _tree(em, t, i, st)
    if code == 20:
        return _shrub(em, t, i, st)
    if code == 30:
        return _grass(em, t, i, st)
    if code == 40:
        return _crop(rng, em, t, i, st, scene.parcels.ravel(), rows)
    if code == 50:
        return _built(rng, em, t, i, st, scene.blocks.ravel(), scene.paved.ravel())
    if code == 60:
        return _bare(em, t, i, st, ripple)
    if code == 70:
        return _snow(em, t, i)
    if code == 80:
        return _water(em, t, i, scene.river.ravel(), scene.ocean)
    if code == 90:
        return _wetland(em, t, i, st)
    if code == 95:
        return _mangrove(em, t, i)
    if code == 100:
        return _moss(em, t, i)
    raise ValueError(f"unknown WorldCover code {code}")


def _add_seasonal_snow(
    refl: np.ndarray, scene: Scene, st: CellState, t: _Texture, em: dict[str, np.ndarray]
) -> np.ndarray:
    """Winter snow over open land (and partly under trees); water and built-up stay visible."""
    cover = _sig(4.0 * (t.grid("large") + 3.0 * (st.seasonal_snow - 0.5)))
    cover = cover * np.isin(scene.codes, (20, 30, 40, 60, 90, 100)) + 0.35 * cover * (
        scene.codes == 10
    )
    snow = em["old_snow"][:, None, None] * (0.9 + 0.1 * t.grid("mid")[None])
    return (refl * (1 - cover[None]) + snow * cover[None]).astype(np.float32)
