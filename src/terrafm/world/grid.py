"""Geography of the synthetic world: Major-TOM grid cells, UTM grids, climate zones, regions.

Major-TOM (docs/design.md, "Pretraining data") names cells on a 10 km equal-distance grid: rows are 10 km apart along the
meridian, counted north (``U``) or south (``D``) of the equator; each row has as many columns as
10 km fit into its parallel, counted east (``R``) or west (``L``) of Greenwich, e.g. ``282D_485L``.
Each synthetic cell gets such a name, a UTM CRS, the affine transform of its 10 m pixel grid, a
Köppen climate zone and a world region (the strata of TerraFM's land-cover-aware sampling), and
Sentinel-style product identifiers and acquisition times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from rasterio.warp import transform as warp_transform

__all__ = [
    "CLIMATE_ZONES",
    "REGIONS",
    "CellGeo",
    "acquisition_times",
    "cell_geometry",
    "cell_name",
    "draw_climate",
    "draw_location",
    "grid_point",
    "mgrs_tile",
    "s1_product_id",
    "s2_product_id",
]

MERIDIAN_KM = 40007.863
EQUATOR_KM = 40075.017
GRID_KM = 10.0
PIXEL_M = 10.0

# World regions as (lat_min, lat_max, lon_min, lon_max, share of land cells): coarse continental
# boxes; what matters for sampling is that regions are distinct strata with unequal sizes.
REGIONS: dict[str, tuple[float, float, float, float, float]] = {
    "europe": (36.0, 70.0, -10.0, 40.0, 0.09),
    "africa": (-34.0, 35.0, -17.0, 50.0, 0.21),
    "asia": (5.0, 72.0, 40.0, 145.0, 0.31),
    "north_america": (15.0, 72.0, -165.0, -55.0, 0.16),
    "south_america": (-55.0, 12.0, -80.0, -35.0, 0.12),
    "oceania": (-44.0, -11.0, 113.0, 153.0, 0.06),
    "antarctica": (-80.0, -65.0, -180.0, 180.0, 0.05),
}
OCEAN = "ocean"

# Köppen-Geiger zones used by the world (main group letter first: A tropical, B arid,
# C temperate, D continental, E polar).
CLIMATE_ZONES = (
    "Af",
    "Aw",
    "BWh",
    "BSh",
    "BSk",
    "Csa",
    "Cfa",
    "Cfb",
    "Dfa",
    "Dfb",
    "Dfc",
    "ET",
    "EF",
)

# Probability of each zone by absolute latitude band (upper edge in degrees).
_ZONES_BY_LAT: tuple[tuple[float, dict[str, float]], ...] = (
    (12.0, {"Af": 0.5, "Aw": 0.35, "BSh": 0.1, "Cfb": 0.05}),
    (25.0, {"Aw": 0.3, "BWh": 0.35, "BSh": 0.2, "Cfa": 0.15}),
    (38.0, {"BWh": 0.25, "BSk": 0.15, "Csa": 0.2, "Cfa": 0.3, "Dfa": 0.1}),
    (50.0, {"Cfb": 0.3, "Dfb": 0.3, "BSk": 0.15, "Csa": 0.1, "Dfa": 0.15}),
    (62.0, {"Dfb": 0.3, "Dfc": 0.4, "Cfb": 0.2, "ET": 0.1}),
    (91.0, {"Dfc": 0.3, "ET": 0.45, "EF": 0.25}),
)
# Regions drier or wetter than their latitude alone says (multiplies the B-zone weights).
_ARIDITY = {"africa": 1.6, "oceania": 2.2, "asia": 1.2, "antarctica": 0.0}


@dataclass(frozen=True)
class CellGeo:
    """Where a cell lies.

    Attributes:
        grid_cell: Major-TOM name (``282D_485L``).
        row: signed grid row (north positive).
        col: signed grid column (east positive).
        centre_lat: latitude of the image centre.
        centre_lon: longitude of the image centre.
        epsg: UTM EPSG code (326zz north, 327zz south).
        transform: affine (a, b, c, d, e, f) of the 10 m pixel grid.
        climate_zone: Köppen code.
        region: world region or ``ocean``.
    """

    grid_cell: str
    row: int
    col: int
    centre_lat: float
    centre_lon: float
    epsg: int
    transform: tuple[float, float, float, float, float, float]
    climate_zone: str
    region: str

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"


def cell_name(row: int, col: int) -> str:
    """Major-TOM name of grid cell (row, col): ``cell_name(-282, -485) == "282D_485L"``."""
    return f"{abs(row)}{'U' if row >= 0 else 'D'}_{abs(col)}{'R' if col >= 0 else 'L'}"


def _row_lat(row: int) -> float:
    return row * GRID_KM / MERIDIAN_KM * 360.0


def _n_cols(lat: float) -> int:
    return max(1, math.ceil(EQUATOR_KM * math.cos(math.radians(lat)) / GRID_KM))


def grid_point(row: int, col: int) -> tuple[float, float]:
    """(lat, lon) of the south-west corner of grid cell (row, col)."""
    lat = _row_lat(row)
    return lat, col * 360.0 / _n_cols(lat)


def grid_index(lat: float, lon: float) -> tuple[int, int]:
    """The grid cell (row, col) whose south-west corner is nearest below-left of (lat, lon)."""
    row = math.floor(lat / (GRID_KM / MERIDIAN_KM * 360.0))
    n = _n_cols(_row_lat(row))
    return row, math.floor(((lon + 180.0) % 360.0 - 180.0) / (360.0 / n))


def _utm_epsg(lat: float, lon: float) -> int:
    zone = min(60, int((lon + 180.0) // 6.0) + 1)
    return (32600 if lat >= 0 else 32700) + zone


def cell_geometry(
    row: int, col: int, size: int
) -> tuple[float, float, int, tuple[float, float, float, float, float, float]]:
    """Centre, UTM EPSG and 10 m affine transform of a ``size`` px image of grid cell (row, col).

    The image is centred in the 10 km cell (a real 1068 px Major-TOM image covers all of it; a
    smaller synthetic one covers its middle). The corner is snapped to the 10 m grid.
    """
    lat0, lon0 = grid_point(row, col)
    lat_c = lat0 + 0.5 * GRID_KM / MERIDIAN_KM * 360.0
    lon_c = lon0 + 0.5 * 360.0 / _n_cols(lat0)
    epsg = _utm_epsg(lat_c, lon_c)
    xs, ys = warp_transform("EPSG:4326", f"EPSG:{epsg}", [lon_c], [lat_c])
    half = size * PIXEL_M / 2.0
    x0 = round((xs[0] - half) / PIXEL_M) * PIXEL_M
    y0 = round((ys[0] + half) / PIXEL_M) * PIXEL_M
    return lat_c, lon_c, epsg, (PIXEL_M, 0.0, float(x0), 0.0, -PIXEL_M, float(y0))


def draw_climate(rng: np.random.Generator, lat: float, region: str) -> str:
    """A Köppen zone for a cell at ``lat`` in ``region`` (latitude bands x regional aridity)."""
    if region == "antarctica":
        return "EF" if rng.random() < 0.8 else "ET"
    a = abs(lat)
    table = next(t for edge, t in _ZONES_BY_LAT if a < edge)
    zones = list(table)
    w = np.array([table[z] for z in zones])
    aridity = _ARIDITY.get(region, 0.8)
    w = w * np.array([aridity if z.startswith("B") else 1.0 for z in zones])
    if lat < 0:  # little continental (D) climate in the southern hemisphere
        w = w * np.array([0.1 if z.startswith("D") else 1.0 for z in zones])
    if w.sum() <= 0:
        return zones[int(np.argmax(list(table.values())))]
    return zones[int(rng.choice(len(zones), p=w / w.sum()))]


def draw_location(rng: np.random.Generator, ocean: bool) -> tuple[float, float, str]:
    """(lat, lon, region) of a random land cell (area-uniform within its region) or ocean cell."""
    if ocean:
        lat = math.degrees(
            math.asin(rng.uniform(math.sin(math.radians(-60)), math.sin(math.radians(70))))
        )
        return lat, float(rng.uniform(-180, 180)), OCEAN
    names = list(REGIONS)
    w = np.array([REGIONS[n][4] for n in names])
    region = names[int(rng.choice(len(names), p=w / w.sum()))]
    la0, la1, lo0, lo1, _ = REGIONS[region]
    s0, s1 = math.sin(math.radians(la0)), math.sin(math.radians(la1))
    lat = math.degrees(math.asin(rng.uniform(s0, s1)))
    return lat, float(rng.uniform(lo0, lo1)), region


def acquisition_times(rng: np.random.Generator, lon: float) -> tuple[datetime, datetime]:
    """(Sentinel-2, Sentinel-1) acquisition times: S2 near 10:30 local solar time between 2017 and
    2021; S1 within a week of it, near 06:00 or 18:00 local time (descending / ascending pass)."""
    day = datetime(2017, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365)))
    utc_offset_h = lon / 15.0
    s2 = day + timedelta(hours=10.5 - utc_offset_h + rng.normal(0, 0.2))
    s1_local = 6.0 if rng.random() < 0.5 else 18.0
    s1 = day + timedelta(
        days=int(rng.integers(-6, 7)), hours=s1_local - utc_offset_h + rng.normal(0, 0.2)
    )
    return s2.replace(microsecond=0), s1.replace(microsecond=0)


_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COL_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


def mgrs_tile(epsg: int, lat: float, easting: float, northing: float) -> str:
    """Sentinel-2 tile id (MGRS 100 km square), e.g. ``33UVP``."""
    zone = epsg % 100
    band = _LAT_BANDS[min(max(int((lat + 80.0) // 8.0), 0), len(_LAT_BANDS) - 1)]
    col = _COL_SETS[zone % 3][min(max(int(easting // 100_000) - 1, 0), 7)]
    row = _ROW_LETTERS[(int(northing // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{col}{row}"


def _baseline(year: int) -> str:
    # Processing baselines before 04.00: no BOA_ADD_OFFSET on L2A DNs (docs/design.md, "Sensors and units").
    return {2017: "N0205", 2018: "N0206", 2019: "N0213", 2020: "N0214"}.get(year, "N0300")


def s2_product_id(
    rng: np.random.Generator, level: str, when: datetime, tile: str, orbit: int
) -> str:
    """A Sentinel-2 product name, e.g. ``S2B_MSIL2A_20200815T102559_N0214_R108_T32TMT_...``."""
    sat = "A" if rng.random() < 0.5 else "B"
    proc = when + timedelta(hours=float(rng.uniform(1, 30)))
    return (
        f"S2{sat}_MSI{level}_{when:%Y%m%dT%H%M%S}_{_baseline(when.year)}_R{orbit:03d}_T{tile}_"
        f"{proc:%Y%m%dT%H%M%S}"
    )


def s1_product_id(rng: np.random.Generator, when: datetime) -> str:
    """A Sentinel-1 IW GRD product name (Major-TOM's S1RTC is derived from these)."""
    sat = "A" if rng.random() < 0.5 else "B"
    stop = when + timedelta(seconds=25)
    orbit = int(rng.integers(10_000, 45_000))
    take = int(rng.integers(0, 0xFFFFFF))
    uid = int(rng.integers(0, 0xFFFF))
    return f"S1{sat}_IW_GRDH_1SDV_{when:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{orbit:06d}_{take:06X}_{uid:04X}"
