"""Mapping a dataset's bands onto a sensor stem by name, with documented imputation (docs/design.md, "Sensors and units", "Evaluation protocols / GEO-Bench v1").

Datasets declare the names of the channels they hold; the stem expects its own bands in its own
order (:mod:`terrafm.sensors`). A :class:`BandPlan` says, for every stem band, which dataset channel
feeds it. Rules:

- Names are matched after :func:`terrafm.sensors.canonical_band_name` (``B8A``, ``08A``, ``B08A``
  ... are one band). Channels the stem does not use (L1C's B10, slope, DEM, cloud probability) are
  ignored and listed in ``BandPlan.ignored``.
- A missing Sentinel-2 band is imputed by **copying the present band nearest in wavelength**, the
  rule behind the published harness's examples (B10 <- B11, B01 <- B02, B09 <- B8A; also B8A <- B08,
  B06 <- B05). B10 is never used as a source. At most ``max_imputed`` bands may be imputed.
- Sentinel-1 needs both VV and VH; no radar band is imputed.
- Anything else (too many missing bands, no band of the sensor at all) is a
  :class:`terrafm.sensors.BandError` naming the missing and the available bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from terrafm.sensors import S2_B10, BandError, canonical_band_name, get_sensor

__all__ = ["DEFAULT_MAX_IMPUTED", "BandPlan", "plan_bands"]

# Enough for every published task (So2Sat/LCZ: B01 and B09; brick kiln: B06 and B09).
DEFAULT_MAX_IMPUTED = 3


@dataclass(frozen=True)
class BandPlan:
    """How dataset channels feed a sensor stem.

    Attributes:
        sensor: sensor key.
        source_bands: the dataset's channel names, as declared.
        indices: for each stem band (stem order), the index of the dataset channel copied into it.
        imputed: stem band -> dataset band copied into it because the stem band is missing.
        ignored: dataset channels the stem does not use.
    """

    sensor: str
    source_bands: tuple[str, ...]
    indices: tuple[int, ...]
    imputed: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Channels (C_src, H, W) -> stem bands (C_stem, H, W)."""
        if x.shape[0] != len(self.source_bands):
            raise BandError(
                f"sensor {self.sensor!r}: array has {x.shape[0]} channels but "
                f"{len(self.source_bands)} bands were declared: {list(self.source_bands)}"
            )
        return np.take(x, list(self.indices), axis=0)

    def describe(self) -> str:
        parts = [f"{self.sensor}: {len(self.indices)} stem bands from {len(self.source_bands)}"]
        if self.imputed:
            parts.append("imputed " + ", ".join(f"{k}<-{v}" for k, v in self.imputed.items()))
        if self.ignored:
            parts.append("ignored " + ", ".join(self.ignored))
        return "; ".join(parts)


def _wavelengths(sensor: str) -> dict[str, float]:
    return {b.name: b.wavelength for b in get_sensor(sensor).bands}


def plan_bands(
    sensor: str, bands: Sequence[str], max_imputed: int = DEFAULT_MAX_IMPUTED
) -> BandPlan:
    """Plan how the channels named ``bands`` feed the stem of ``sensor``.

    Args:
        sensor: ``s1``, ``s2_l1c`` or ``s2_l2a``.
        bands: the dataset's channel names, in channel order.
        max_imputed: most stem bands that may be imputed by copying a neighbour.

    Raises:
        BandError: duplicate names, an S1 band missing, no band of the sensor, or more than
            ``max_imputed`` S2 bands missing.
    """
    s = get_sensor(sensor)
    names = [canonical_band_name(b) for b in bands]
    stem = set(s.band_names)
    dupes = sorted({n for n in names if n in stem and names.count(n) > 1})
    if dupes:
        raise BandError(f"sensor {sensor!r}: duplicate bands {dupes} in {list(bands)}")
    position = {n: i for i, n in enumerate(names) if n in stem}
    ignored = tuple(b for b, n in zip(bands, names) if n not in stem)
    missing = [b for b in s.band_names if b not in position]
    if not position:
        raise BandError(
            f"sensor {sensor!r}: none of the dataset's bands {list(bands)} belongs to this sensor "
            f"(expected {list(s.band_names)})"
        )
    if missing and sensor == "s1":
        raise BandError(
            f"sensor 's1': missing band(s) {missing} in {list(bands)}; both VV and VH are needed "
            "and radar bands are never imputed"
        )
    if len(missing) > max_imputed:
        raise BandError(
            f"sensor {sensor!r}: {len(missing)} band(s) missing {missing} from {list(bands)}; at "
            f"most {max_imputed} may be imputed by copying a neighbour, so this band set cannot "
            "feed the stem"
        )
    wl = _wavelengths(sensor)
    sources = [n for n in position if n != S2_B10.name]
    imputed: dict[str, str] = {}
    for band in missing:
        nearest = min(sources, key=lambda n: (abs(wl[n] - wl[band]), wl[n]))
        imputed[band] = nearest
    indices = tuple(position[b] if b in position else position[imputed[b]] for b in s.band_names)
    return BandPlan(sensor, tuple(bands), indices, imputed, ignored)
