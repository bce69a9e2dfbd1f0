"""Atmosphere of the synthetic world: Sentinel-2 L1C (top of atmosphere) from L2A (surface).

A simple single-scattering model per band b (wavelength lambda in µm), good enough to give L1C the
look that matters to a model — bright, hazy blue/coastal bands, water-vapour-absorbed B09, a
cirrus band B10 that is dark except over high cloud — and to vary between scenes:

- Rayleigh optical depth ``0.0088 lambda^-4.05``; aerosol ``tau550 (lambda / 0.55)^-alpha``;
- path reflectance ``(0.33 tau_r + 0.08 tau_a) cos(40°) / cos(sza)``; two-way transmittance
  ``exp(-m (0.5 tau_r + 0.35 tau_a)) T_gas`` with relative airmass ``m`` and water-vapour
  absorption in B09 (and, much stronger, B10); aerosol depth can vary over the scene (haze);
- ``L1C = path + T * L2A`` (DN = reflectance x 10000); thin cirrus adds to every band and most
  to B10.

The nominal atmosphere (tau550 0.15, alpha 1.3, 2 cm water vapour, sun zenith 40°) inverts the
EuroSAT-MS class means of docs/design.md, "Calibration of the synthetic world" (L1C) into the surface spectra of ``terrafm.world.spectra``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "L1C_BANDS",
    "S2_BANDS",
    "WAVELENGTH",
    "Atmosphere",
    "draw_atmosphere",
    "nominal_atmosphere",
    "sun_zenith",
    "to_toa",
]

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
L1C_BANDS = (*S2_BANDS[:10], "B10", *S2_BANDS[10:])
# Central wavelengths (µm) in S2_BANDS order, then B10.
WAVELENGTH = np.array(
    [0.443, 0.490, 0.560, 0.665, 0.705, 0.740, 0.783, 0.842, 0.865, 0.945, 1.610, 2.190],
    dtype=np.float32,
)
B10_WAVELENGTH = 1.375
# Water-vapour absorption coefficient (per cm of precipitable water) and other gases (O2, O3, CO2,
# CH4) as a fixed two-way transmittance, per band in S2_BANDS order.
_WV_K = np.array([0, 0, 0, 0, 0.01, 0.0, 0.01, 0.01, 0.02, 0.65, 0.02, 0.04], dtype=np.float32)
_GAS_T = np.array(
    [0.98, 0.99, 0.96, 0.97, 0.98, 0.99, 0.99, 0.99, 0.99, 1.0, 0.99, 0.97], dtype=np.float32
)
_B10_WV_K = 6.0  # B10 sits in a strong water-vapour band: the surface barely reaches orbit


@dataclass(frozen=True)
class Atmosphere:
    """One scene's atmosphere.

    Attributes:
        aot550: aerosol optical thickness at 550 nm.
        angstrom: Ångström exponent of the aerosol.
        water_vapour: precipitable water in cm.
        sun_zenith: degrees.
    """

    aot550: float
    angstrom: float
    water_vapour: float
    sun_zenith: float

    def _depths(self) -> tuple[np.ndarray, np.ndarray]:
        """(Rayleigh, aerosol) optical depths per band, (12,) each."""
        tau_r = 0.0088 * WAVELENGTH**-4.05
        tau_a = self.aot550 * (WAVELENGTH / 0.55) ** -self.angstrom
        return tau_r, tau_a

    def _mu(self) -> float:
        return math.cos(math.radians(min(self.sun_zenith, 80.0)))

    def path(self, haze: np.ndarray | None = None) -> np.ndarray:
        """Path reflectance in DN: (12,), or (12, H, W) when ``haze`` scales the aerosol depth."""
        tau_r, tau_a = self._depths()
        # 0.77 = cos(40°): the nominal geometry has unit geometric factor (view at nadir).
        geom = 0.77 / self._mu() * 10000.0
        ray, aer = 0.33 * tau_r * geom, 0.08 * tau_a * geom
        if haze is None:
            return (ray + aer).astype(np.float32)
        return (ray[:, None, None] + aer[:, None, None] * haze[None]).astype(np.float32)

    def transmittance(self, haze: np.ndarray | None = None) -> np.ndarray:
        """Two-way transmittance: (12,), or (12, H, W) when ``haze`` scales the aerosol depth."""
        tau_r, tau_a = self._depths()
        m = (1.0 + 1.0 / self._mu()) / 2.3  # airmass relative to the nominal sun at 40°
        gas = _GAS_T * np.exp(-_WV_K * self.water_vapour)
        base = gas * np.exp(-m * 0.5 * tau_r)
        if haze is None:
            return (base * np.exp(-m * 0.35 * tau_a)).astype(np.float32)
        aer = np.exp(-m * 0.35 * tau_a[:, None, None] * haze[None])
        return (base[:, None, None] * aer).astype(np.float32)

    def b10_transmittance(self) -> float:
        """Two-way transmittance of the surface signal in B10 (1375 nm)."""
        return float(math.exp(-_B10_WV_K * self.water_vapour))


def nominal_atmosphere() -> Atmosphere:
    """The atmosphere the EuroSAT-MS calibration spectra are inverted with."""
    return Atmosphere(aot550=0.15, angstrom=1.3, water_vapour=2.0, sun_zenith=40.0)


def sun_zenith(lat: float, day_of_year: int, local_hour: float = 10.5) -> float:
    """Solar zenith angle in degrees at a latitude, day of year and local solar time."""
    decl = math.radians(23.44) * math.sin(2 * math.pi * (day_of_year - 81) / 365.0)
    hour = math.radians(15.0 * (local_hour - 12.0))
    phi = math.radians(lat)
    cos_z = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos_z))))


def draw_atmosphere(rng: np.random.Generator, sza: float, humid: float) -> Atmosphere:
    """A random scene atmosphere.

    Args:
        rng: random generator.
        sza: sun zenith angle in degrees.
        humid: 0 (desert / polar) .. 1 (tropical), scales water vapour.
    """
    aot = float(np.clip(rng.lognormal(math.log(0.13), 0.55), 0.02, 0.9))
    wv = float(np.clip(rng.normal(0.6 + 3.0 * humid, 0.6), 0.2, 5.5))
    return Atmosphere(
        aot550=aot,
        angstrom=float(rng.uniform(0.7, 1.9)),
        water_vapour=wv,
        sun_zenith=float(min(sza, 78.0)),
    )


def to_toa(
    surface: np.ndarray,
    atm: Atmosphere,
    haze: np.ndarray | None = None,
    cirrus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-of-atmosphere DN from surface DN.

    Args:
        surface: (12, H, W) surface reflectance DN in S2_BANDS order (clouds included).
        atm: the scene atmosphere.
        haze: optional (H, W) multiplier of the aerosol optical depth (spatially varying haze).
        cirrus: optional (H, W) cirrus reflectance DN (seen in every band, strongest in B10).

    Returns:
        ((12, H, W) TOA DN in S2_BANDS order, (H, W) B10 DN), float32.
    """
    path = atm.path(haze)
    trans = atm.transmittance(haze)
    if path.ndim == 1:
        path, trans = path[:, None, None], trans[:, None, None]
    toa = path + trans * surface
    # B10 sees the surface only through a strong water-vapour band: a faint SWIR-like echo.
    b10 = 0.3 * surface[10] * atm.b10_transmittance() + 4.0
    if cirrus is not None:
        toa = toa + 0.6 * cirrus[None]
        b10 = b10 + cirrus
    return toa.astype(np.float32), b10.astype(np.float32)
