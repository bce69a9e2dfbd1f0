"""Land-cover maps of the synthetic world over the ESA WorldCover classes (docs/design.md, "Pretraining data").

A cell's map is built the way landscapes look from 10 m: class regions are the arg-max of smooth
random "potential" fields, one per class, each with its own patch scale and a preference for low
or high ground (water and wetland in valleys, snow and rock on tops); the arg-max biases are solved
so the map matches the cell's target composition. Cropland is cut into field parcels, built-up
areas into street blocks; rivers and roads are drawn as polylines across the cell.

Compositions come from a per-climate prior (long-tailed over the world: tree cover, cropland and
grassland common; mangroves, moss and snow rare) perturbed per cell with a Dirichlet draw, so the
dominant class varies between cells of the same climate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from terrafm.data.landcover import WORLDCOVER_CLASSES
from terrafm.world.fields import (
    dilate,
    fractal_fields,
    meander,
    polyline_distance,
    rescale01,
    smooth_fields,
    strip_parcels,
)

__all__ = [
    "CLASS_NAMES",
    "CLIMATE_COMPOSITION",
    "Scene",
    "draw_composition",
    "make_scene",
]

CLASS_NAMES: dict[int, str] = {
    10: "tree_cover",
    20: "shrubland",
    30: "grassland",
    40: "cropland",
    50: "built_up",
    60: "bare_sparse_vegetation",
    70: "snow_and_ice",
    80: "permanent_water_bodies",
    90: "herbaceous_wetland",
    95: "mangroves",
    100: "moss_and_lichen",
}

# Expected class fractions per Köppen zone, in WORLDCOVER_CLASSES order
# (10 tree, 20 shrub, 30 grass, 40 crop, 50 built, 60 bare, 70 snow, 80 water, 90 wetland,
# 95 mangroves, 100 moss). Rough shares of these biomes in the ESA WorldCover map.
CLIMATE_COMPOSITION: dict[str, tuple[float, ...]] = {
    "Af": (0.66, 0.02, 0.05, 0.09, 0.025, 0.005, 0.0, 0.05, 0.04, 0.06, 0.0),
    "Aw": (0.34, 0.12, 0.25, 0.16, 0.03, 0.02, 0.0, 0.04, 0.025, 0.015, 0.0),
    "BWh": (0.005, 0.12, 0.06, 0.03, 0.02, 0.75, 0.0, 0.01, 0.005, 0.0, 0.0),
    "BSh": (0.04, 0.3, 0.3, 0.12, 0.03, 0.18, 0.0, 0.02, 0.01, 0.0, 0.0),
    "BSk": (0.04, 0.28, 0.32, 0.14, 0.03, 0.16, 0.005, 0.02, 0.005, 0.0, 0.0),
    "Csa": (0.25, 0.2, 0.15, 0.28, 0.06, 0.03, 0.0, 0.03, 0.0, 0.0, 0.0),
    "Cfa": (0.3, 0.03, 0.15, 0.38, 0.07, 0.01, 0.0, 0.04, 0.02, 0.0, 0.0),
    "Cfb": (0.3, 0.02, 0.25, 0.3, 0.08, 0.005, 0.0, 0.035, 0.01, 0.0, 0.0),
    "Dfa": (0.25, 0.03, 0.15, 0.42, 0.05, 0.01, 0.01, 0.05, 0.03, 0.0, 0.0),
    "Dfb": (0.45, 0.03, 0.12, 0.22, 0.03, 0.005, 0.015, 0.07, 0.06, 0.0, 0.0),
    "Dfc": (0.6, 0.08, 0.06, 0.02, 0.005, 0.01, 0.02, 0.1, 0.07, 0.0, 0.035),
    "ET": (0.02, 0.12, 0.12, 0.0, 0.0, 0.15, 0.12, 0.1, 0.07, 0.0, 0.3),
    "EF": (0.0, 0.0, 0.0, 0.0, 0.0, 0.12, 0.8, 0.05, 0.0, 0.0, 0.03),
}

# Per-class patch scale (px at 10 m) of the potential field and preference for high ground.
_SCALE = np.array([40, 22, 35, 50, 18, 45, 40, 35, 16, 20, 25], dtype=np.float64)
_ELEVATION_AFFINITY = np.array(
    [0.2, 0.2, 0.0, -0.4, -0.4, 0.6, 1.8, -1.5, -1.0, -1.2, 0.5], dtype=np.float32
)
_IDX = {c: i for i, c in enumerate(WORLDCOVER_CLASSES)}
_HUMID_RIVER_P = {"A": 0.45, "B": 0.12, "C": 0.4, "D": 0.45, "E": 0.25}


@dataclass
class Scene:
    """A cell's land-cover map plus the structure the spectra and radar are drawn from.

    Attributes:
        codes: uint8 (S, S) ESA WorldCover codes.
        elevation: float32 (S, S) in [0, 1] (relative terrain height).
        relief: terrain roughness of the cell (0 flat .. 1 mountainous).
        parcels: int32 (S, S) agricultural field ids (used where codes == 40).
        blocks: int32 (S, S) street-block ids (used where codes == 50).
        paved: bool (S, S) streets and roads.
        river: bool (S, S) river water.
        climate_zone: Köppen code of the cell.
        ocean: open-ocean cell.
    """

    codes: np.ndarray
    elevation: np.ndarray
    relief: float
    parcels: np.ndarray
    blocks: np.ndarray
    paved: np.ndarray
    river: np.ndarray
    climate_zone: str
    ocean: bool

    @property
    def size(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        arrays = (self.codes, self.elevation, self.parcels, self.blocks, self.paved, self.river)
        return sum(a.nbytes for a in arrays)


def draw_composition(
    rng: np.random.Generator,
    climate_zone: str,
    boost: int | None = None,
    concentration: float = 6.0,
) -> np.ndarray:
    """Target class fractions of one cell: a Dirichlet draw around the climate's prior.

    Args:
        rng: random generator.
        climate_zone: Köppen code (a key of :data:`CLIMATE_COMPOSITION`).
        boost: an ESA code to make dominant (held-out task cells are drawn per target class).
        concentration: Dirichlet concentration; lower means more varied cells.

    Returns:
        float64 (11,) fractions summing to 1, in ``WORLDCOVER_CLASSES`` order.
    """
    prior = np.asarray(CLIMATE_COMPOSITION[climate_zone], dtype=np.float64)
    alpha = concentration * prior + np.where(prior > 0, 0.02, 0.0)
    p = rng.dirichlet(np.maximum(alpha, 1e-3)) * (prior > 0)
    if boost is not None:
        k = _IDX[boost]
        p[k] += rng.uniform(0.7, 1.6) * max(p.max(), 0.2)
        if boost == 95:  # mangroves line tidal water
            p[_IDX[80]] += 0.15 * p.sum()
    return p / p.sum()


def _solve_biases(pot: np.ndarray, target: np.ndarray, iters: int = 40) -> np.ndarray:
    """Biases b with argmax(pot + b) matching ``target`` fractions (on a ~64 x 64 subsample).

    A damped fixed-point iteration on log fractions; the best biases seen are returned (arg-max
    fractions are piecewise constant in b, so plain iteration can cycle).
    """
    stride = max(1, pot.shape[-1] // 64)
    sub = pot[:, ::stride, ::stride]
    k = pot.shape[0]
    b = np.zeros(k, dtype=np.float32)
    best, best_err = b.copy(), np.inf
    log_t = np.log(target + 1e-4)
    for it in range(iters):
        lab = np.argmax(sub + b[:, None, None], axis=0)
        frac = np.bincount(lab.ravel(), minlength=k) / lab.size
        err = float(np.abs(frac - target).sum())
        if err < best_err:
            best, best_err = b.copy(), err
        if err < 0.01:
            break
        step = 0.6 * 0.93**it
        b = np.clip(b + step * (log_t - np.log(frac + 1e-4)), -30, 30).astype(np.float32)
    return best


def _class_regions(
    rng: np.random.Generator, size: int, target: np.ndarray, elevation: np.ndarray
) -> np.ndarray:
    """Arg-max of per-class potentials (present classes only), as ESA codes (S, S) uint8."""
    present = np.flatnonzero(target > 1e-3)
    pot = smooth_fields(rng, len(present), size, _SCALE[present])
    # A regional layer (a quarter of the cell) groups patches the way forests, farmland and
    # towns cluster; it only matters for cells much larger than the patch scales.
    regional = np.maximum(_SCALE[present], size / 4.0)
    pot = 0.8 * pot + 0.6 * smooth_fields(rng, len(present), size, regional)
    pot += 0.35 * fractal_fields(rng, 1, size, beta=2.0)  # ragged, shared boundaries
    ez = (elevation - elevation.mean()) / (elevation.std() + 1e-6)
    pot += _ELEVATION_AFFINITY[present, None, None] * ez[None]
    b = _solve_biases(pot, target[present] / target[present].sum())
    lab = np.argmax(pot + b[:, None, None], axis=0)
    codes = np.asarray(WORLDCOVER_CLASSES, dtype=np.uint8)[present][lab]
    return codes


def _street_blocks(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A rotated street grid: (block ids int32 (S, S), street mask bool (S, S))."""
    theta = rng.uniform(0, np.pi / 2)
    spacing = rng.uniform(6.0, 12.0, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) / spacing[0]
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) / spacing[1]
    iu, iv = np.floor(u), np.floor(v)
    width = rng.uniform(0.08, 0.16)
    street = ((u - iu) < width) | ((v - iv) < width)
    blocks = ((iu - iu.min()) * 10_000 + (iv - iv.min())).astype(np.int64)
    _, inv = np.unique(blocks, return_inverse=True)
    return inv.reshape(size, size).astype(np.int32), street


def _draw_rivers_and_roads(rng: np.random.Generator, scene: Scene, target: np.ndarray) -> None:
    """Rivers (water with a riparian strip) and roads (built-up) across the cell, in place."""
    s = scene.size
    group = scene.climate_zone[0]
    if rng.random() < _HUMID_RIVER_P[group] and scene.climate_zone != "EF":
        d = polyline_distance(meander(rng, s, wiggle=rng.uniform(0.05, 0.3)), s)
        half = rng.uniform(0.8, 3.5)
        river = d < half
        bank = (d < half + rng.uniform(1.5, 4.0)) & ~river
        open_land = np.isin(scene.codes, (30, 40, 60))
        if group in "ACD":
            scene.codes[bank & open_land] = 10 if rng.random() < 0.6 else 90
        scene.codes[river] = 80
        scene.river |= river
    built, crop = target[_IDX[50]], target[_IDX[40]]
    n_roads = int(rng.random() < min(1.0, 8 * built + crop)) + int(rng.random() < 4 * built)
    for _ in range(n_roads):
        d = polyline_distance(meander(rng, s, wiggle=rng.uniform(0.0, 0.06), steps=16), s)
        road = (d < rng.uniform(0.5, 1.2)) & (scene.codes != 80)
        scene.codes[road] = 50
        scene.paved |= road


def make_scene(
    rng: np.random.Generator, size: int, climate_zone: str, target: np.ndarray, ocean: bool = False
) -> Scene:
    """Draw one cell's land-cover scene.

    Args:
        rng: random generator.
        size: side in px at 10 m.
        climate_zone: Köppen code.
        target: class fractions in ``WORLDCOVER_CLASSES`` order (from :func:`draw_composition`).
        ocean: an open-ocean cell (all water).

    Returns:
        the :class:`Scene`.
    """
    relief_max = 1.0 if climate_zone[0] == "E" or target[_IDX[70]] > 0.1 else 0.6
    relief = float(rng.uniform(0.05, relief_max))
    elevation = rescale01(fractal_fields(rng, 1, size, beta=3.2, min_scale=1.0)[0])
    warp = 3.0 * smooth_fields(rng, 2, size, 25.0)
    parcels = strip_parcels(rng, size, width=(8.0, 25.0), length=(14.0, 50.0), warp=warp)
    blocks, streets = _street_blocks(rng, size)
    if ocean:
        codes = np.full((size, size), 80, dtype=np.uint8)
    else:
        codes = _class_regions(rng, size, target, elevation)
    scene = Scene(
        codes=codes,
        elevation=elevation.astype(np.float32),
        relief=relief,
        parcels=parcels,
        blocks=blocks,
        paved=streets & (codes == 50),
        river=np.zeros((size, size), dtype=bool),
        climate_zone=climate_zone,
        ocean=ocean,
    )
    if not ocean:
        _draw_rivers_and_roads(rng, scene, target)
        _fill_mangrove_channels(rng, scene)
    return scene


def _fill_mangrove_channels(rng: np.random.Generator, scene: Scene) -> None:
    """Mangroves grow at the water's edge: drop mangrove pixels far from any water, in place."""
    mangrove = scene.codes == 95
    if not mangrove.any():
        return
    water = scene.codes == 80
    if not water.any():
        return
    near = dilate(water, int(rng.integers(20, 40)))  # belts a few hundred metres wide
    far = mangrove & ~near
    scene.codes[far] = 10
