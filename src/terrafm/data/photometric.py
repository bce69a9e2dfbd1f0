"""Per-view photometric jitter of a training batch: an opt-in extension beyond the paper.

The paper's views differ only in crop, flip and sensors; two crops of one tile then share its
exact spectral signature, which a short run may match by colour rather than by land cover
(docs/pretraining.md, "Photometric jitter", with what it measured to). This module gives every
view its own acquisition conditions, drawn from the ranges by which real Sentinel acquisitions
of one place differ (docs/design.md, "Photometric jitter"):

- optical (S2 L1C and L2A): a common gain (illumination, view and sun geometry), a small gain per
  band (residual calibration and atmospheric correction), and an additive path reflectance that
  falls with wavelength as an aerosol's does (Angstrom exponent 1.3);
- radar (S1): a common offset in dB (calibration and incidence angle), and a smaller one per
  polarisation.

It works on the model's z-scored inputs, ``z = (v - mean) / std``: a gain ``g`` and an offset
``h`` on the physical value ``v`` become ``z' = g z + ((g - 1) mean + h) / std``. The draws depend
only on the run's seed, the step and the rank, so a resumed run jitters exactly as before. Off
unless ``data.photometric.prob > 0``; no shipped config turns it on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from terrafm.errors import ConfigError
from terrafm.sensors import get_sensor

__all__ = ["PhotometricConfig", "PhotometricJitter"]

_OPTICAL = ("s2_l1c", "s2_l2a")
_ANGSTROM = 1.3  # wavelength exponent of the additive path reflectance
_REF_UM = 0.49  # B02, where the path term is ``haze`` itself


@dataclass
class PhotometricConfig:
    """Ranges of the per-view jitter (``data.photometric``); ``prob = 0`` turns it off.

    Attributes:
        prob: probability that a view of a sample is jittered (each view, teacher and student,
            draws on its own).
        brightness: optical common gain ``g ~ U(1 - brightness, 1 + brightness)``.
        band_gain: optical per-band gain ``U(1 - band_gain, 1 + band_gain)`` on top.
        haze: optical path reflectance at 490 nm, ``U(0, haze)`` (reflectance, 0-1), scaled by
            ``(wavelength / 0.49 um) ** -1.3`` per band.
        s1_db: radar common offset ``U(-s1_db, s1_db)`` in dB.
        s1_pol_db: radar per-polarisation offset ``U(-s1_pol_db, s1_pol_db)`` dB on top.
    """

    prob: float = 0.0
    brightness: float = 0.2
    band_gain: float = 0.05
    haze: float = 0.02
    s1_db: float = 1.0
    s1_pol_db: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"data.photometric.prob must be in [0, 1], got {self.prob}")
        for name in ("brightness", "band_gain"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"data.photometric.{name} must be in [0, 1), got {v}")
        for name in ("haze", "s1_db", "s1_pol_db"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"data.photometric.{name} must be >= 0, got {getattr(self, name)}"
                )

    @property
    def enabled(self) -> bool:
        return self.prob > 0


class PhotometricJitter:
    """Applies :class:`PhotometricConfig` to the views of a contract-B batch.

    Args:
        config: the ranges.
        seed: the run's seed; with the step and the rank it fixes every draw.
    """

    def __init__(self, config: PhotometricConfig, seed: int) -> None:
        self.cfg = config
        self.seed = int(seed)
        self._consts: dict[tuple[str, str], tuple[torch.Tensor, ...]] = {}

    def _sensor_consts(self, sensor: str, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(mean / std, 1 / std, path weight / std) per band, each (C,)."""
        key = (sensor, str(device))
        if key not in self._consts:
            s = get_sensor(sensor)
            mean = torch.tensor(s.stats.mean, dtype=torch.float32)
            std = torch.tensor(s.stats.std, dtype=torch.float32)
            wl = torch.tensor([b.wavelength for b in s.bands], dtype=torch.float32)
            path = (wl / _REF_UM) ** -_ANGSTROM * 10000.0  # DN per unit reflectance at 490 nm
            self._consts[key] = tuple(t.to(device) for t in (mean / std, 1.0 / std, path / std))
        return self._consts[key]

    def _view(self, view: Mapping[str, Any], gen: torch.Generator) -> dict[str, Any]:
        inputs = view["inputs"]
        sensors = sorted(inputs)
        if not sensors:
            return dict(view)
        first = inputs[sensors[0]]
        n, device = first.shape[0], first.device
        cfg = self.cfg

        def uniform(*shape: int, lo: float, hi: float) -> torch.Tensor:
            u = torch.rand(*shape, generator=gen, device=gen.device)
            return (lo + (hi - lo) * u).to(device)

        on = (torch.rand(n, generator=gen, device=gen.device) < cfg.prob).to(device)
        # Optical draws are shared by L1C and L2A of one view: one acquisition, two products.
        n_opt = get_sensor("s2_l2a").num_bands
        gain = uniform(n, 1, lo=1 - cfg.brightness, hi=1 + cfg.brightness)
        gain = gain * uniform(n, n_opt, lo=1 - cfg.band_gain, hi=1 + cfg.band_gain)
        haze = uniform(n, 1, lo=0.0, hi=cfg.haze)
        n_s1 = get_sensor("s1").num_bands
        s1_off = uniform(n, 1, lo=-cfg.s1_db, hi=cfg.s1_db)
        s1_off = s1_off + uniform(n, n_s1, lo=-cfg.s1_pol_db, hi=cfg.s1_pol_db)
        out = {}
        masks = view.get("masks", {})
        for s in sensors:
            x = inputs[s]
            use = on & masks[s].to(device) if s in masks else on  # absent sensors stay zero
            if s in _OPTICAL:
                m_over_s, inv_s, path_over_s = self._sensor_consts(s, device)
                g = torch.where(use[:, None], gain, torch.ones_like(gain))
                b = (g - 1) * m_over_s + haze * path_over_s * use[:, None]
            elif s == "s1":
                _, inv_s, _ = self._sensor_consts(s, device)
                g = torch.ones_like(s1_off)
                b = s1_off * inv_s * use[:, None]
            else:  # a sensor this jitter knows nothing about stays as it is
                out[s] = x
                continue
            out[s] = x * g[:, :, None, None].to(x.dtype) + b[:, :, None, None].to(x.dtype)
        return {**view, "inputs": out}

    def __call__(self, batch: Mapping[str, Any], step: int, rank: int = 0) -> dict[str, Any]:
        """``batch`` with every view (teacher and student) jittered independently; the input
        tensors are not modified (views may share them)."""
        if not self.cfg.enabled:
            return dict(batch)
        gen = torch.Generator(device="cpu")
        gen.manual_seed((self.seed * 1_000_003 + step) * 1_009 + rank)
        out = dict(batch)
        for key in ("teacher", "student_global", "student_local"):
            if key in batch:
                out[key] = [self._view(view, gen) for view in batch[key]]
        return out
