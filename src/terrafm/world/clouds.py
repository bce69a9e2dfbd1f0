"""Clouds, cloud shadows, cirrus and no-data edges of synthetic Sentinel scenes.

Clouds exist only in Sentinel-2 (radar sees through them). Thick clouds are thresholded fractal
fields with soft edges and their own brightness texture; their shadows are the same shapes shifted
away from the sun, darkening the ground; thin cirrus adds a faint veil in every band and a strong
signal in L1C's B10. The ``cloud_mask`` column (Major-TOM: a 10 m mask) marks thick cloud and
dense cirrus. No-data edges mimic the swath / orbit borders of real products: a straight cut across
the cell outside which every band is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from terrafm.world.fields import fractal_fields, smooth_fields
from terrafm.world.spectra import CLOUD

__all__ = ["Clouds", "apply_clouds", "draw_clouds", "nodata_edge"]


@dataclass(frozen=True)
class Clouds:
    """Cloud layers of one scene, each (S, S) float32.

    Attributes:
        opacity: thick-cloud fraction 0..1.
        shadow: shadow darkening 0..1 (fraction of direct light removed).
        cirrus: cirrus reflectance in DN.
        brightness: cloud-top brightness multiplier.
    """

    opacity: np.ndarray
    shadow: np.ndarray
    cirrus: np.ndarray
    brightness: np.ndarray

    def mask(self) -> np.ndarray:
        """uint8 (S, S) cloud mask: 1 where thick cloud or dense cirrus, else 0."""
        return ((self.opacity > 0.25) | (self.cirrus > 400.0)).astype(np.uint8)


def draw_clouds(rng: np.random.Generator, size: int, cover: float) -> Clouds:
    """Cloud layers covering about ``cover`` (0..1) of the scene with thick cloud.

    ``cover`` 0 returns empty layers (no cirrus either).
    """
    zeros = np.zeros((size, size), dtype=np.float32)
    if cover <= 0:
        return Clouds(zeros, zeros, zeros, zeros + 1)
    f, tex = fractal_fields(rng, 2, size, beta=2.6, min_scale=1.5)
    thr = float(np.quantile(f, 1.0 - min(cover, 0.999)))
    opacity = np.clip((f - thr) / 0.6, 0.0, 1.0) ** 0.7
    azimuth = math.radians(rng.uniform(120, 240))
    dist = rng.uniform(5, 25)
    dy, dx = int(round(dist * math.cos(azimuth))), int(round(-dist * math.sin(azimuth)))
    shifted = np.roll(opacity, (dy, dx), axis=(0, 1))
    shadow = 0.65 * shifted * (1.0 - opacity)
    cirrus = zeros
    if rng.random() < 0.5:
        c = smooth_fields(rng, 1, size, rng.uniform(15, 40))[0]
        cirrus = (np.clip(c - rng.uniform(-0.5, 1.0), 0, None) * rng.uniform(150, 500)).astype(
            np.float32
        )
    brightness = (1.0 + 0.12 * tex).astype(np.float32)
    return Clouds(opacity.astype(np.float32), shadow.astype(np.float32), cirrus, brightness)


def apply_clouds(surface: np.ndarray, clouds: Clouds) -> np.ndarray:
    """Cloudy-sky reflectance (DN) seen from above: shadowed ground under (semi-)opaque cloud.

    Args:
        surface: (12, S, S) surface reflectance DN.
        clouds: the scene's cloud layers.

    Returns:
        float32 (12, S, S); cirrus is added later by the atmosphere (it sits above it).
    """
    cloud = np.asarray(CLOUD, dtype=np.float32)[:, None, None] * clouds.brightness[None]
    ground = surface * (1.0 - clouds.shadow)[None]
    a = clouds.opacity[None]
    return (ground * (1.0 - a) + cloud * a).astype(np.float32)


def nodata_edge(rng: np.random.Generator, size: int, fraction: float) -> np.ndarray:
    """bool (S, S), True on roughly ``fraction`` of the cell beyond a straight cut."""
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    proj = (xx - size / 2) * math.cos(theta) + (yy - size / 2) * math.sin(theta)
    return proj > np.quantile(proj, 1.0 - fraction)
