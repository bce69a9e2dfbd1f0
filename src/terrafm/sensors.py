"""Sensor facts in one place: band names, order, GSD, units, wavelengths, normalisation.

TerraFM (arXiv 2506.06281) reads three sensor products, each through its own patch stem:

- ``s1``: Sentinel-1 backscatter, VV and VH, in dB (linear power is converted).
- ``s2_l1c``: Sentinel-2 top-of-atmosphere reflectance, 12 bands (B10 dropped), DN = reflectance x 1e4.
- ``s2_l2a``: Sentinel-2 surface reflectance, the same 12 bands.

Bands are always matched **by name** (docs/design.md, "Sensors and units"): datasets disagree on order (EuroSAT-MS puts B8A
last) and on spelling (``B8A``, ``B08A``, ``08A - Vegetation Red Edge``, ``vv``).
:func:`normalize` is the one function that turns raw values into model input.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from terrafm.errors import DataError

__all__ = [
    "S1_GRD_STATS",
    "S1_RTC_STATS",
    "SENSORS",
    "Band",
    "BandError",
    "Sensor",
    "Stats",
    "band_indices",
    "canonical_band_name",
    "get_sensor",
    "linear_to_db",
    "normalize",
    "select_bands",
]

SENSOR_KEYS = ("s1", "s2_l1c", "s2_l2a")

# Sentinel-2 L2A products processed with baseline 04.00 (after 2022-01-25) add this to every DN.
BOA_ADD_OFFSET = 1000.0
# Floor for linear backscatter before taking the log; -50 dB is below the S1 noise floor.
DB_EPS = 1e-5


class BandError(DataError, ValueError):
    """Input bands do not match what a sensor expects (missing, unknown or wrong count)."""


@dataclass(frozen=True)
class Band:
    """One spectral band or polarisation.

    Attributes:
        name: canonical name (``B02``, ``B8A``, ``VV``).
        gsd: native ground sampling distance in metres.
        wavelength: central wavelength in micrometres (radar: the C-band wavelength).
        description: human name.
    """

    name: str
    gsd: float
    wavelength: float
    description: str


@dataclass(frozen=True)
class Stats:
    """Per-band z-score statistics in the sensor's model unit, canonical band order."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Stats:
        mean = d["mean"]
        std = d["std"]
        assert isinstance(mean, Sequence) and isinstance(std, Sequence)
        return cls(
            tuple(float(v) for v in mean), tuple(float(v) for v in std), str(d.get("source", ""))
        )


@dataclass(frozen=True)
class Sensor:
    """A sensor product as the model sees it.

    Attributes:
        key: ``s1``, ``s2_l1c`` or ``s2_l2a``.
        bands: bands in the order the model's stem expects.
        unit: unit of the model's input before z-scoring (``dB`` or ``DN``).
        stats: default normalisation statistics, in ``unit``.
        extra_bands: bands that may appear in raw products but are dropped (L1C's B10).
    """

    key: str
    bands: tuple[Band, ...]
    unit: str
    stats: Stats
    extra_bands: tuple[str, ...] = field(default=())

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def num_bands(self) -> int:
        return len(self.bands)


_S2_BANDS = (
    Band("B01", 60, 0.443, "coastal aerosol"),
    Band("B02", 10, 0.490, "blue"),
    Band("B03", 10, 0.560, "green"),
    Band("B04", 10, 0.665, "red"),
    Band("B05", 20, 0.705, "red edge 1"),
    Band("B06", 20, 0.740, "red edge 2"),
    Band("B07", 20, 0.783, "red edge 3"),
    Band("B08", 10, 0.842, "near infrared"),
    Band("B8A", 20, 0.865, "narrow near infrared"),
    Band("B09", 60, 0.945, "water vapour"),
    Band("B11", 20, 1.610, "short-wave infrared 1"),
    Band("B12", 20, 2.190, "short-wave infrared 2"),
)
S2_B10 = Band("B10", 60, 1.375, "cirrus")
_S1_BANDS = (
    Band("VV", 10, 55465.76, "vertical transmit, vertical receive"),
    Band("VH", 10, 55465.76, "vertical transmit, horizontal receive"),
)

# Reference statistics from TerraMesh (a Major-TOM subset), docs/design.md, "Sensors and units". L1C drops the B10 entry.
S2_L2A_STATS = Stats(
    (
        1390.5,
        1503.3,
        1718.2,
        1853.9,
        2199.1,
        2780.0,
        2987.0,
        3083.2,
        3132.2,
        3163.0,
        2424.9,
        1857.6,
    ),
    (
        2106.8,
        2141.1,
        2039.0,
        2134.1,
        2085.3,
        1889.9,
        1820.3,
        1871.9,
        1753.8,
        1797.4,
        1434.3,
        1334.3,
    ),
    "TerraMesh S2L2A",
)
S2_L1C_STATS = Stats(
    (
        2357.1,
        2137.4,
        2018.8,
        2083.0,
        2295.7,
        2854.5,
        3122.8,
        3040.6,
        3306.5,
        1473.8,
        2472.8,
        1838.9,
    ),
    (
        1624.7,
        1675.8,
        1557.7,
        1833.7,
        1823.7,
        1734.0,
        1732.1,
        1679.7,
        1727.3,
        1024.7,
        1331.4,
        1160.4,
    ),
    "TerraMesh S2L1C (B10 dropped)",
)
S1_RTC_STATS = Stats((-10.93, -17.33), (4.39, 4.46), "TerraMesh S1RTC (dB)")
S1_GRD_STATS = Stats((-12.60, -20.29), (5.20, 5.89), "TerraMesh S1GRD (dB)")

SENSORS: dict[str, Sensor] = {
    "s1": Sensor("s1", _S1_BANDS, "dB", S1_RTC_STATS),
    "s2_l1c": Sensor("s2_l1c", _S2_BANDS, "DN", S2_L1C_STATS, extra_bands=("B10",)),
    "s2_l2a": Sensor("s2_l2a", _S2_BANDS, "DN", S2_L2A_STATS),
}


def get_sensor(key: str) -> Sensor:
    """The :class:`Sensor` for ``key``; a clear error for anything else."""
    try:
        return SENSORS[key]
    except KeyError:
        raise BandError(f"unknown sensor {key!r}; expected one of {list(SENSORS)}") from None


_S2_NAME = re.compile(r"^(?:S2[_ -]?)?B?0*(\d{1,2})(A?)$")


def canonical_band_name(name: str) -> str:
    """Canonical spelling of a band name.

    Accepts ``B2``, ``B02``, ``b02``, ``B8A``, ``B08A``, ``8A``, GEO-Bench's ``"08A - Vegetation Red
    Edge"`` and ``"02 - Blue"``, and polarisations ``vv``/``VV``/``VV_dB``. Names it cannot parse are
    returned upper-cased, so they fail the lookup with the caller's clear error.
    """
    raw = name.strip()
    token = raw.split(" - ")[0].strip().upper().replace("-", "_")
    for pol in ("VV", "VH", "HH", "HV"):
        if token in (pol, f"{pol}_DB", f"{pol}_LIN", f"S1_{pol}"):
            return pol
    m = _S2_NAME.match(token)
    if m:
        num, a = int(m.group(1)), m.group(2)
        return f"B{num}A" if a else f"B{num:02d}"
    return token


def band_indices(sensor: str, bands: Sequence[str]) -> list[int]:
    """Positions in ``bands`` of each band the sensor's stem expects, in stem order.

    Extra bands the sensor drops on purpose (L1C's B10) are ignored; any other band that is not the
    sensor's is an error, as is a missing one.
    """
    s = get_sensor(sensor)
    names = [canonical_band_name(b) for b in bands]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BandError(f"sensor {sensor!r}: duplicate bands {dupes} in input bands {list(bands)}")
    known = set(s.band_names) | set(s.extra_bands)
    unknown = [b for b, n in zip(bands, names) if n not in known]
    if unknown:
        raise BandError(
            f"sensor {sensor!r}: unknown band name(s) {unknown}; expected {list(s.band_names)}"
        )
    missing = [b for b in s.band_names if b not in names]
    if missing:
        raise BandError(
            f"sensor {sensor!r}: missing band(s) {missing}; got {list(bands)}, "
            f"need {list(s.band_names)}"
        )
    return [names.index(b) for b in s.band_names]


ArrayLike = torch.Tensor | np.ndarray


def _check_channels(x: ArrayLike, n: int, sensor: str, bands: Sequence[str] | None) -> int:
    """The channel axis of ``x`` ((C,H,W) or (B,C,H,W)), checked against ``n`` channels."""
    if x.ndim not in (3, 4):
        raise BandError(
            f"sensor {sensor!r}: expected an array shaped (C, H, W) or (B, C, H, W), got {tuple(x.shape)}"
        )
    axis = x.ndim - 3
    if x.shape[axis] != n:
        what = f"bands {list(bands)}" if bands is not None else f"the {n} bands of {sensor!r}"
        raise BandError(
            f"sensor {sensor!r}: input has {x.shape[axis]} channels but {what} were declared"
        )
    return axis


def select_bands(x: ArrayLike, sensor: str, bands: Sequence[str] | None = None) -> ArrayLike:
    """Reorder/select channels of ``x`` by name into the sensor's stem order.

    Args:
        x: (C, H, W) or (B, C, H, W) array or tensor.
        sensor: sensor key.
        bands: names of the channels of ``x``; ``None`` means ``x`` is already in stem order.

    Returns:
        ``x`` restricted to the stem's bands in stem order (same type as the input).
    """
    s = get_sensor(sensor)
    if bands is None:
        _check_channels(x, s.num_bands, sensor, None)
        return x
    axis = _check_channels(x, len(bands), sensor, bands)
    idx = band_indices(sensor, bands)
    if idx == list(range(len(bands))):
        return x
    if isinstance(x, torch.Tensor):
        return x.index_select(axis, torch.as_tensor(idx, device=x.device))
    return np.take(x, idx, axis=axis)


def linear_to_db(x: ArrayLike, eps: float = DB_EPS) -> ArrayLike:
    """``10 log10(max(x, eps))``: Sentinel-1 linear power to decibels."""
    if isinstance(x, torch.Tensor):
        return 10.0 * torch.log10(torch.clamp(x.float(), min=eps))
    return 10.0 * np.log10(np.maximum(np.asarray(x, dtype=np.float32), eps))


def normalize(
    x: ArrayLike,
    sensor: str,
    bands: Sequence[str] | None = None,
    *,
    stats: Stats | None = None,
    s1_unit: str = "dB",
    boa_offset: bool = False,
) -> torch.Tensor:
    """Raw sensor values to the model's input: select bands by name, fix units, z-score.

    Args:
        x: raw values, (C, H, W) or (B, C, H, W). S2: DN (reflectance x 10000). S1: dB or linear.
        sensor: ``s1``, ``s2_l1c`` or ``s2_l2a``.
        bands: channel names of ``x``; ``None`` if already in the stem's order.
        stats: override of the sensor's default statistics (must be in the model unit).
        s1_unit: ``"dB"`` or ``"linear"`` (Major-TOM S1RTC is linear power).
        boa_offset: subtract the L2A ``BOA_ADD_OFFSET`` (1000 DN) first, for L2A products processed
            after 2022-01-25 whose metadata declares it.

    Returns:
        float32 tensor with the sensor's bands in stem order, z-scored.
    """
    s = get_sensor(sensor)
    sel = select_bands(x, sensor, bands)
    t = torch.as_tensor(np.ascontiguousarray(sel)) if isinstance(sel, np.ndarray) else sel
    t = t.float()
    if sensor == "s1":
        if s1_unit.lower() == "linear":
            t = linear_to_db(t)  # type: ignore[assignment]
        elif s1_unit.lower() != "db":
            raise BandError(f"sensor 's1': s1_unit must be 'dB' or 'linear', got {s1_unit!r}")
    elif boa_offset:
        if sensor != "s2_l2a":
            raise BandError(f"sensor {sensor!r}: boa_offset applies to s2_l2a only")
        t = t - BOA_ADD_OFFSET
    st = stats or s.stats
    if len(st.mean) != s.num_bands or len(st.std) != s.num_bands:
        raise BandError(
            f"sensor {sensor!r}: statistics have {len(st.mean)} means / {len(st.std)} stds, "
            f"need {s.num_bands}"
        )
    shape = (-1, 1, 1)
    mean = torch.tensor(st.mean, dtype=torch.float32, device=t.device).view(shape)
    std = torch.tensor(st.std, dtype=torch.float32, device=t.device).view(shape)
    return (t - mean) / std


def denormalize(x: torch.Tensor, sensor: str, stats: Stats | None = None) -> torch.Tensor:
    """Inverse of the z-score in :func:`normalize` (back to dB or DN), for previews."""
    st = stats or get_sensor(sensor).stats
    mean = torch.tensor(st.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(st.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * std + mean


def default_stats() -> dict[str, dict[str, object]]:
    """The default statistics of every sensor, as stored in checkpoint metadata."""
    return {
        k: {**s.stats.to_dict(), "unit": s.unit, "bands": list(s.band_names)}
        for k, s in SENSORS.items()
    }
