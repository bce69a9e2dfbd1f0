"""Sentinel-1 backscatter of the synthetic world: VV / VH linear power per class, with speckle.

Per class a mean backscatter in dB (VV, VH), calibrated so that the scene averages of docs/design.md, "Calibration of the synthetic world" hold
(Sen1Floods11: dry land VV -9.3 / VH -16.9 dB, water VV -17.0 / VH -25.2 dB): forests bright in VH
(volume scattering), built-up very bright and heterogeneous (double bounce, corner reflectors),
flooded vegetation bright in VV, calm water and smooth sand dark. Per-field soil moisture and crop
state, per-cell wind over water and terrain slopes facing the radar modulate it; multiplicative
Gamma speckle with an equivalent number of looks of about 4.4 (IW GRD) is applied per pixel and
polarisation. Values are linear power, as Major-TOM's S1RTC stores them (docs/design.md, "Pretraining data").
"""

from __future__ import annotations

import math

import numpy as np

from terrafm.world.fields import smooth_fields
from terrafm.world.landcover import Scene

__all__ = ["CLASS_BACKSCATTER_DB", "ENL", "backscatter", "speckle_bias_db"]

# Mean of the dB image per class (VV, VH), after speckle.
CLASS_BACKSCATTER_DB: dict[int, tuple[float, float]] = {
    10: (-7.6, -14.3),
    20: (-10.0, -17.5),
    30: (-10.8, -18.2),
    40: (-9.6, -17.0),
    50: (-4.0, -11.5),
    60: (-13.0, -22.0),
    70: (-12.5, -20.5),
    80: (-17.0, -25.2),
    90: (-7.8, -16.8),
    95: (-7.0, -13.2),
    100: (-12.5, -19.8),
}
ENL = 4.4  # equivalent number of looks of Sentinel-1 IW GRD


def _digamma(x: float) -> float:
    """Digamma by recurrence and the asymptotic series (enough for speckle bias, x > 0)."""
    acc = 0.0
    while x < 6.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    return acc + math.log(x) - 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def speckle_bias_db(looks: float = ENL) -> float:
    """Mean of ``10 log10`` of unit-mean Gamma(L) speckle: ``10 / ln 10 (psi(L) - ln L)`` (< 0)."""
    return 10.0 / math.log(10.0) * (_digamma(looks) - math.log(looks))


def _class_means_db(
    rng: np.random.Generator, scene: Scene, wetness: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean backscatter in dB before terrain and speckle, (S, S) each."""
    s = scene.size
    vv = np.zeros((s, s), dtype=np.float32)
    vh = np.zeros((s, s), dtype=np.float32)
    for code, (m_vv, m_vh) in CLASS_BACKSCATTER_DB.items():
        sel = scene.codes == code
        if sel.any():
            vv[sel], vh[sel] = m_vv + 1.5 * wetness, m_vh + 1.0 * wetness
    fine, mid, large = smooth_fields(rng, 3, s, np.array([1.0, 4.0, 25.0]))
    # Fields: soil moisture and crop state per parcel shift VV and VH.
    n = int(scene.parcels.max()) + 1
    moist = rng.normal(0.0, 1.5, n).astype(np.float32)
    crop_vh = rng.normal(0.0, 1.8, n).astype(np.float32)
    crop = scene.codes == 40
    vv[crop] += moist[scene.parcels[crop]]
    vh[crop] += moist[scene.parcels[crop]] * 0.6 + crop_vh[scene.parcels[crop]]
    # Built-up: bright blocks facing the radar, dark streets, strong point targets.
    built = scene.codes == 50
    nb = int(scene.blocks.max()) + 1
    orient = rng.normal(0.0, 3.0, nb).astype(np.float32)
    vv[built] += orient[scene.blocks[built]] + 2.5 * fine[built]
    vh[built] += 0.6 * orient[scene.blocks[built]] + 2.0 * fine[built]
    paved = scene.paved
    vv[paved] -= 8.0
    vh[paved] -= 6.0
    # Water: wind roughens the surface (one wind speed per cell, streaks across it).
    water = scene.codes == 80
    wind = rng.normal(0.0, 2.0) + 1.5 * large[water]
    vv[water] += wind
    vh[water] += 0.4 * wind
    # Forest canopies and everything else: a little structure at a few pixels.
    vv += 0.8 * mid + 0.6 * large
    vh += 0.8 * mid + 0.5 * large
    return vv, vh


def _terrain_db(scene: Scene, ascending: bool) -> np.ndarray:
    """Slopes facing the radar look brighter (range direction: east for descending passes)."""
    _, gx = np.gradient(scene.elevation * scene.relief * 60.0)
    facing = gx if ascending else -gx
    return np.clip(6.0 * facing, -6.0, 6.0).astype(np.float32)


def backscatter(
    rng: np.random.Generator, scene: Scene, ascending: bool, wetness: float = 0.0
) -> np.ndarray:
    """Speckled S1 backscatter of a cell.

    Args:
        rng: random generator.
        scene: the cell's land-cover scene.
        ascending: orbit direction (sets which slopes face the radar).
        wetness: -1 (dry) .. 1 (wet) soil and canopy moisture of the acquisition.

    Returns:
        float32 (2, S, S) linear power, (VV, VH).
    """
    vv_db, vh_db = _class_means_db(rng, scene, wetness)
    terrain = _terrain_db(scene, ascending)
    # Targets are means of the speckled dB image, so remove the speckle bias in advance.
    bias = speckle_bias_db(ENL)
    db = np.stack([vv_db + terrain, vh_db + terrain]) - bias  # (2, S, S)
    power = np.power(10.0, db / 10.0, dtype=np.float32)
    speck = rng.gamma(ENL, 1.0 / ENL, size=power.shape).astype(np.float32)
    return (power * speck).astype(np.float32)
