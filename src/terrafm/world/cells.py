"""One synthetic grid cell: its plan (geography, dates, conditions) and its rendered products.

A :class:`CellPlan` is cheap and holds every scene-wide draw; rendering is a pure function of the
plan, split by product so a writer can render one product at a time without holding the world in
memory: :func:`render_scene` (land cover), :func:`render_surface` (cloud-free L2A reflectance at
10 m), :func:`render_s2` (L2A or L1C bands at native resolution with clouds, no-data and noise),
:func:`render_s1` (VV / VH linear power). Every step draws from its own random stream seeded by
(world seed, cell kind, cell index, step), so results do not depend on which products are rendered
or in what order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from terrafm.world.atmosphere import (
    L1C_BANDS,
    S2_BANDS,
    Atmosphere,
    draw_atmosphere,
    sun_zenith,
    to_toa,
)
from terrafm.world.clouds import apply_clouds, draw_clouds, nodata_edge
from terrafm.world.fields import block_mean, smooth_fields
from terrafm.world.grid import (
    CellGeo,
    acquisition_times,
    cell_geometry,
    cell_name,
    draw_climate,
    draw_location,
    grid_index,
    mgrs_tile,
    s1_product_id,
    s2_product_id,
)
from terrafm.world.landcover import Scene, draw_composition, make_scene
from terrafm.world.sar import backscatter
from terrafm.world.spectra import CellState, surface_reflectance

__all__ = [
    "BAND_FACTOR",
    "CellConditions",
    "CellPlan",
    "RenderCache",
    "cell_rng",
    "plan_cell",
    "render_s1",
    "render_s2",
    "render_scene",
    "render_surface",
]

# Native pixel size / 10 m per band (Major-TOM stores 20 m and 60 m bands at native resolution).
BAND_FACTOR = {
    **{b: 1 for b in ("B02", "B03", "B04", "B08")},
    **{b: 2 for b in ("B05", "B06", "B07", "B8A", "B11", "B12")},
    **{b: 6 for b in ("B01", "B09", "B10")},
}
# Random streams per cell.
_PLAN, _SCENE, _SURFACE, _CLOUDS, _L1C, _S1, _NOISE_L2A, _NODATA = range(8)
_HUMID = {"A": 1.0, "B": 0.15, "C": 0.6, "D": 0.45, "E": 0.1}


def cell_rng(seed: int, kind: int, index: int, stream: int) -> np.random.Generator:
    """The random generator of one step of one cell (independent streams, stable by seed)."""
    return np.random.default_rng([seed, kind, index, stream])


@dataclass(frozen=True)
class CellConditions:
    """Acquisition conditions of a cell.

    Attributes:
        state: season and climate conditions of the surface.
        cloud_cover: target thick-cloud fraction of the S2 scene (0..1).
        s2_nodata: fraction of the S2 scene outside the swath (0..1).
        s1_nodata: fraction of the S1 scene outside the swath (0..1).
        atmosphere: the S2 scene's atmosphere.
        ascending: S1 orbit direction.
        wetness: S1 surface wetness, -1 .. 1.
    """

    state: CellState
    cloud_cover: float
    s2_nodata: float
    s1_nodata: float
    atmosphere: Atmosphere
    ascending: bool
    wetness: float


@dataclass(frozen=True)
class CellPlan:
    """Everything drawn for a cell before rendering.

    Attributes:
        seed: world seed.
        kind: 0 for pretraining cells, 1 for held-out task cells.
        index: cell index within its kind.
        size: side in px at 10 m.
        geo: location, grid and climate.
        composition: target class fractions (WorldCover order).
        ocean: open-ocean cell.
        s2_time: Sentinel-2 acquisition time.
        s1_time: Sentinel-1 acquisition time.
        conditions: acquisition conditions.
        products: product name -> product id, for the products this cell has.
        crs: the CRS as written in the metadata (sometimes malformed like real rows).
    """

    seed: int
    kind: int
    index: int
    size: int
    geo: CellGeo
    composition: np.ndarray
    ocean: bool
    s2_time: datetime
    s1_time: datetime
    conditions: CellConditions
    products: dict[str, str]
    crs: str

    def rng(self, stream: int) -> np.random.Generator:
        return cell_rng(self.seed, self.kind, self.index, stream)


def _season(lat: float, when: datetime) -> float:
    """-1 (mid-winter) .. 1 (mid-summer) of the local hemisphere."""
    doy = when.timetuple().tm_yday
    s = math.cos(2 * math.pi * (doy - 196) / 365.0)
    return s if lat >= 0 else -s


def _cell_state(
    rng: np.random.Generator, zone: str, season: float, snowy_winters: bool
) -> CellState:
    """Greenness, leaf-on, conifer share, aridity and seasonal snow from climate and season."""
    group, summer = zone[0], (season + 1) / 2
    lo, hi = {
        "A": (0.55, 0.9),
        "B": (0.1, 0.35),
        "C": (0.45, 0.9),
        "D": (0.1, 0.9),
        "E": (0.05, 0.55),
    }[group]
    if zone == "Csa":  # Mediterranean: green winters, dry summers
        summer = 1 - summer
    if zone == "Af":
        summer = 1.0
    greenness = float(np.clip(lo + (hi - lo) * summer + rng.normal(0, 0.08), 0, 1))
    leaf_on = 1.0 if group == "A" else float(np.clip(1.6 * summer - 0.2, 0, 1))
    conifer = {"Dfc": 0.8, "Dfb": 0.5, "Dfa": 0.3, "Cfb": 0.3, "ET": 0.6, "BSk": 0.4}.get(zone, 0.1)
    aridity = {"BWh": 0.95, "BSh": 0.6, "BSk": 0.5, "Csa": 0.35, "Aw": 0.2}.get(zone, 0.05)
    snow = 0.0
    if snowy_winters and group in "DE" and season < -0.3:
        snow = float(np.clip(rng.uniform(0.2, 1.0) * (-season), 0, 1))
    return CellState(
        greenness=greenness,
        leaf_on=leaf_on,
        conifer=float(np.clip(conifer + rng.normal(0, 0.1), 0, 1)),
        aridity=float(np.clip(aridity + rng.normal(0, 0.05), 0, 1)),
        seasonal_snow=snow,
    )


def plan_cell(
    seed: int,
    kind: int,
    index: int,
    size: int,
    taken: set[tuple[int, int]],
    *,
    ocean: bool,
    boost: int | None = None,
    cloud_p: float = 0.0,
    nodata_p: float = 0.0,
    snowy_winters: bool = True,
    climates: tuple[str, ...] | None = None,
    missing_p: dict[str, float] | None = None,
    malformed_crs_p: float = 0.0,
) -> CellPlan:
    """Draw a cell's plan at a grid cell not yet in ``taken`` (which it adds to).

    Args:
        seed: world seed.
        kind: 0 pretraining, 1 held-out.
        index: cell index within its kind.
        size: side in px at 10 m.
        taken: grid (row, col) already used by the world.
        ocean: make an open-ocean cell.
        boost: ESA code to make dominant (held-out task cells).
        cloud_p: probability that the S2 scene has clouds.
        nodata_p: probability of a no-data edge (each of S2 and S1).
        snowy_winters: allow seasonal snow over open land in winter scenes.
        climates: allowed Köppen zones (redrawn until one fits).
        missing_p: product name -> probability that the cell lacks it (S2L2A is always there).
        malformed_crs_p: probability of a metadata CRS like ``EPSG:EPSG:32633``.
    """
    rng = cell_rng(seed, kind, index, _PLAN)
    geo = _draw_geo(rng, size, taken, ocean, climates, f"{kind}/{index}")
    s2_time, s1_time = acquisition_times(rng, geo.centre_lon)
    composition = draw_composition(rng, geo.climate_zone, boost=boost)
    conditions = _draw_conditions(rng, geo, s2_time, cloud_p, nodata_p, snowy_winters)
    products = _draw_products(rng, geo, size, s2_time, s1_time, missing_p or {})
    crs = f"EPSG:{geo.crs}" if rng.random() < malformed_crs_p else geo.crs
    return CellPlan(
        seed,
        kind,
        index,
        size,
        geo,
        composition,
        ocean,
        s2_time,
        s1_time,
        conditions,
        products,
        crs,
    )


def _draw_geo(
    rng: np.random.Generator,
    size: int,
    taken: set[tuple[int, int]],
    ocean: bool,
    climates: tuple[str, ...] | None,
    what: str,
) -> CellGeo:
    """A free grid cell (added to ``taken``) in one of ``climates``, with its geometry."""
    for _ in range(1000):
        lat, lon, region = draw_location(rng, ocean)
        zone = draw_climate(rng, lat, region)
        row, col = grid_index(lat, lon)
        if (row, col) not in taken and (climates is None or zone in climates):
            break
    else:
        raise RuntimeError(f"no free grid cell found for cell {what} (climates {climates})")
    taken.add((row, col))
    lat_c, lon_c, epsg, transform = cell_geometry(row, col, size)
    return CellGeo(cell_name(row, col), row, col, lat_c, lon_c, epsg, transform, zone, region)


def _draw_conditions(
    rng: np.random.Generator,
    geo: CellGeo,
    s2_time: datetime,
    cloud_p: float,
    nodata_p: float,
    snowy_winters: bool,
) -> CellConditions:
    zone = geo.climate_zone
    doy = s2_time.timetuple().tm_yday
    cover = float(rng.beta(0.8, 2.0)) if rng.random() < cloud_p else 0.0
    atm = draw_atmosphere(rng, sun_zenith(geo.centre_lat, doy), _HUMID[zone[0]])
    return CellConditions(
        state=_cell_state(rng, zone, _season(geo.centre_lat, s2_time), snowy_winters),
        cloud_cover=cover,
        s2_nodata=float(rng.uniform(0.05, 0.45)) if rng.random() < nodata_p else 0.0,
        s1_nodata=float(rng.uniform(0.05, 0.35)) if rng.random() < nodata_p else 0.0,
        atmosphere=atm,
        ascending=bool(rng.random() < 0.5),
        wetness=float(np.clip(rng.normal(0, 0.4), -1, 1)),
    )


def _draw_products(
    rng: np.random.Generator,
    geo: CellGeo,
    size: int,
    s2_time: datetime,
    s1_time: datetime,
    missing_p: dict[str, float],
) -> dict[str, str]:
    """Product name -> product id, without the products this cell lacks."""
    x_c, y_c = geo.transform[2] + size * 5.0, geo.transform[5] - size * 5.0
    tile = mgrs_tile(geo.epsg, geo.centre_lat, x_c, y_c)
    orbit = int(rng.integers(1, 144))
    products = {
        "S2L2A": s2_product_id(rng, "L2A", s2_time, tile, orbit),
        "S2L1C": s2_product_id(rng, "L1C", s2_time, tile, orbit),
        "S1RTC": s1_product_id(rng, s1_time),
    }
    for name, p in missing_p.items():
        if name != "S2L2A" and rng.random() < p:
            products.pop(name, None)
    return products


def render_scene(plan: CellPlan) -> Scene:
    """The cell's land-cover scene."""
    return make_scene(
        plan.rng(_SCENE), plan.size, plan.geo.climate_zone, plan.composition, plan.ocean
    )


def render_surface(plan: CellPlan, scene: Scene) -> np.ndarray:
    """Cloud-free surface reflectance, (12, S, S) DN at 10 m, as float16.

    float16 keeps 11 significant bits (0.05 %, far below the sensor noise added later) and halves
    the memory of a cached surface; results are the same whether or not a surface was cached.
    """
    return surface_reflectance(plan.rng(_SURFACE), scene, plan.conditions.state).astype(np.float16)


def _native(x: np.ndarray, band: str) -> np.ndarray:
    return block_mean(x, BAND_FACTOR[band])


def _to_dn(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Add sensor noise (about 0.5 % + 8 DN) and quantise to uint16 DN >= 1 (0 is no data)."""
    noisy = x + rng.standard_normal(x.shape, dtype=np.float32) * (0.005 * x + 8.0)
    return np.clip(np.rint(noisy), 1, 65535).astype(np.uint16)


def render_s2(
    plan: CellPlan, scene: Scene, surface: np.ndarray, level: str
) -> tuple[dict[str, np.ndarray], float, float]:
    """Sentinel-2 bands of the cell at native resolution.

    Args:
        plan: the cell plan.
        scene: its scene.
        surface: cloud-free surface reflectance from :func:`render_surface`.
        level: ``L2A`` (surface reflectance, 12 bands) or ``L1C`` (top of atmosphere, + B10).

    Returns:
        (column name -> array (uint16 bands, uint8 ``cloud_mask``), cloud cover in percent of the
        valid pixels, no-data fraction).
    """
    c = plan.conditions
    clouds = draw_clouds(plan.rng(_CLOUDS), plan.size, c.cloud_cover)
    sky = apply_clouds(surface.astype(np.float32), clouds)
    if level == "L2A":
        rng = plan.rng(_NOISE_L2A)
        values = sky + 0.25 * clouds.cirrus[None]  # cirrus correction leaves a residue
        bands = {b: values[i] for i, b in enumerate(S2_BANDS)}
    elif level == "L1C":
        rng = plan.rng(_L1C)
        haze = np.exp(0.3 * smooth_fields(rng, 1, plan.size, 30.0)[0])
        toa, b10 = to_toa(sky, c.atmosphere, haze=haze, cirrus=clouds.cirrus)
        bands = {b: toa[i] for i, b in enumerate(S2_BANDS)} | {"B10": b10}
        bands = {b: bands[b] for b in L1C_BANDS}
    else:
        raise ValueError(f"level must be 'L2A' or 'L1C', got {level!r}")
    nodata = nodata_edge(plan.rng(_NODATA), plan.size, c.s2_nodata) if c.s2_nodata > 0 else None
    out = {}
    for b, x in bands.items():
        dn = _to_dn(rng, _native(x, b))
        if nodata is not None:
            dn[_native(nodata.astype(np.float32), b) > 0.5] = 0
        out[b] = dn
    mask = clouds.mask()
    valid = np.ones_like(mask, dtype=bool) if nodata is None else ~nodata
    mask[~valid] = 0
    out["cloud_mask"] = mask
    cover = 100.0 * float(mask[valid].mean()) if valid.any() else 0.0
    return out, cover, float(1.0 - valid.mean())


def render_s1(plan: CellPlan, scene: Scene) -> tuple[dict[str, np.ndarray], float]:
    """Sentinel-1 ``vv`` / ``vh`` linear power (float32, 0 = no data) and the no-data fraction."""
    c = plan.conditions
    rng = plan.rng(_S1)
    power = backscatter(rng, scene, c.ascending, c.wetness)
    frac = 0.0
    if c.s1_nodata > 0:
        nodata = nodata_edge(rng, plan.size, c.s1_nodata)
        power[:, nodata] = 0.0
        frac = float(nodata.mean())
    return {"vv": power[0], "vh": power[1]}, frac


class RenderCache:
    """Keeps rendered scenes and surfaces of cells for their next product, up to ``max_bytes``.

    Products are written one after another over all cells, so without it every cell's land-cover
    scene would be rendered four times and its surface twice. Entries are kept first come, first
    kept (the access order is cyclic, where that is the best policy); the output is the same with
    any budget.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self._scenes: dict[tuple[int, int], Scene] = {}
        self._surfaces: dict[tuple[int, int], np.ndarray] = {}

    def _fits(self, nbytes: int) -> bool:
        if self.used + nbytes > self.max_bytes:
            return False
        self.used += nbytes
        return True

    def scene(self, plan: CellPlan) -> Scene:
        """The cell's scene, rendered or cached."""
        key = (plan.kind, plan.index)
        if key in self._scenes:
            return self._scenes[key]
        scene = render_scene(plan)
        if self._fits(scene.nbytes):
            self._scenes[key] = scene
        return scene

    def surface(self, plan: CellPlan, scene: Scene, last_use: bool) -> np.ndarray:
        """The cell's surface, rendered or cached; ``last_use`` releases it."""
        key = (plan.kind, plan.index)
        if key in self._surfaces:
            if not last_use:
                return self._surfaces[key]
            surface = self._surfaces.pop(key)
            self.used -= surface.nbytes
            return surface
        surface = render_surface(plan, scene)
        if not last_use and self._fits(surface.nbytes):
            self._surfaces[key] = surface
        return surface
