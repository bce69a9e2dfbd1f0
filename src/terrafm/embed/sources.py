"""Scene inputs: one raster source per sensor, checked for a common grid (docs/design.md, "Sensors and units", "What users need").

A source is either

- a multi-band raster (GeoTIFF, JP2, VRT ...) whose band names come from its band descriptions or
  are given explicitly, or
- a folder of single-band files with the band name in the file name, e.g. a Sentinel-2 SAFE
  ``IMG_DATA`` folder (``T33UUU_20170216T102101_B8A.jp2``; L2A ``R10m/..._B02_10m.jp2``, where the
  finest copy of each band is used), or Sentinel-1 ``..._VV.tif`` / ``s1a-iw-grd-vh-....tiff``.

Bands are matched by name, never by position. All bands of all sensors must share one CRS and one
pixel lattice: the scene grid is the finest band grid, and a band on a coarser grid must be an
integer coarsening of it with the same origin (20 m and 60 m Sentinel-2 bands); it is upsampled
with :mod:`terrafm.io.resample`. Anything else is a :class:`SourceError` naming the file.

Nodata: the file's declared nodata value, else the sensor default (Sentinel-2: DN 0, the products'
NO_DATA value; Sentinel-1: none), else an explicit override. NaN and infinite values are always
nodata.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine

from terrafm.errors import DataError
from terrafm.sensors import BandError, canonical_band_name, get_sensor

__all__ = [
    "BandFile",
    "Grid",
    "Scene",
    "SourceError",
    "SourceSpec",
    "find_boa_offset",
    "open_scene",
]

RASTER_SUFFIXES = (".jp2", ".tif", ".tiff", ".vrt", ".img")
# Sentinel-2 products mark missing pixels with DN 0 (NO_DATA); SAFE JP2 files do not declare it.
S2_NODATA = 0.0
# Grids agree when corners differ by less than this fraction of a pixel.
GRID_TOL = 0.01

_S2_TOKEN = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?)(?=$|[_\-.])", re.IGNORECASE)
_S1_TOKEN = re.compile(r"(?:^|[_\-.])(VV|VH|HH|HV)(?=$|[_\-.])", re.IGNORECASE)


class SourceError(DataError, ValueError):
    """An input that cannot be embedded; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked for one sensor.

    Attributes:
        sensor: ``s1``, ``s2_l1c`` or ``s2_l2a``.
        path: a multi-band raster or a folder of one file per band.
        bands: names of the raster's bands in file order (overrides its band descriptions).
        nodata: override of the nodata value; ``math.nan`` = only NaN is nodata.
        boa_offset: subtract the L2A BOA offset; ``None`` = read it from the SAFE metadata.
    """

    sensor: str
    path: str
    bands: tuple[str, ...] | None = None
    nodata: float | None = None
    boa_offset: bool | None = None


@dataclass(frozen=True)
class Grid:
    """A raster's pixel lattice."""

    crs: str | None
    transform: Affine
    height: int
    width: int

    @property
    def res(self) -> tuple[float, float]:
        return math.hypot(self.transform.a, self.transform.d), math.hypot(
            self.transform.b, self.transform.e
        )


@dataclass(frozen=True)
class BandFile:
    """Where one model band lives.

    Attributes:
        name: canonical band name.
        path: the file.
        index: 1-based band index in the file.
        nodata: the value marking missing pixels (NaN: only NaN/inf are missing).
        factor: (rows, cols) integer coarsening of the file's grid relative to the scene grid.
        shape: the file's (height, width).
    """

    name: str
    path: str
    index: int
    nodata: float
    factor: tuple[int, int] = (1, 1)
    shape: tuple[int, int] = (0, 0)


@dataclass
class SensorSource:
    """The bands of one sensor, in the model stem's order, with their preprocessing options."""

    spec: SourceSpec
    bands: list[BandFile]
    boa_offset: bool

    @property
    def sensor(self) -> str:
        return self.spec.sensor

    @property
    def files(self) -> list[str]:
        return sorted({b.path for b in self.bands})


@dataclass
class Scene:
    """Co-registered sensor sources on one scene grid."""

    sources: dict[str, SensorSource]
    grid: Grid
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({f for s in self.sources.values() for f in s.files})

    @property
    def sensors(self) -> list[str]:
        return list(self.sources)


def _open(path: str) -> rasterio.io.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as e:
        raise SourceError(f"{path}: cannot open as a raster ({e})") from e


def _grid_of(src: rasterio.io.DatasetReader) -> Grid:
    crs = src.crs.to_wkt() if src.crs is not None else None
    return Grid(crs, src.transform, src.height, src.width)


def find_boa_offset(path: str | Path) -> bool | None:
    """Whether a Sentinel-2 L2A SAFE declares the +1000 DN BOA offset (processing baseline 04.00+).

    Looks for ``MTD_MSIL2A.xml`` in ``path`` and up to four folders above it (``IMG_DATA`` sits at
    ``GRANULE/<id>/IMG_DATA``). Returns ``None`` when there is no such file.

    Raises:
        SourceError: the metadata declares an offset other than -1000.
    """
    p = Path(path).resolve()
    start = p if p.is_dir() else p.parent
    for folder in [start, *list(start.parents)[:4]]:
        mtd = folder / "MTD_MSIL2A.xml"
        if mtd.is_file():
            try:
                root = ET.parse(mtd).getroot()
            except ET.ParseError as e:
                raise SourceError(f"{mtd}: unreadable product metadata ({e})") from e
            values = {
                float(el.text or 0) for el in root.iter() if el.tag.endswith("BOA_ADD_OFFSET")
            }
            if not values:
                return False
            if values != {-1000.0}:
                raise SourceError(
                    f"{mtd}: BOA_ADD_OFFSET {sorted(values)} is not the -1000 DN this model handles"
                )
            return True
    return None


def _band_token(sensor: str, filename: str) -> str | None:
    pattern = _S1_TOKEN if sensor == "s1" else _S2_TOKEN
    hits = pattern.findall(Path(filename).stem)
    if len(hits) != 1:
        return None
    return canonical_band_name(hits[0])


def _folder_bands(spec: SourceSpec) -> dict[str, list[tuple[str, int]]]:
    """Candidate (file, band index) per canonical band name in a one-file-per-band folder."""
    folder = Path(spec.path)
    found: dict[str, list[tuple[str, int]]] = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in RASTER_SUFFIXES or not f.is_file():
            continue
        name = _band_token(spec.sensor, f.name)
        if name is not None:
            found.setdefault(name, []).append((str(f), 1))
    if not found:
        raise SourceError(
            f"{folder}: no raster file with a band name in its file name (like '..._B02.jp2' or "
            f"'..._VV.tif') for sensor {spec.sensor!r}"
        )
    return found


def _raster_bands(
    spec: SourceSpec, src: rasterio.io.DatasetReader
) -> dict[str, list[tuple[str, int]]]:
    """(file, band index) per canonical band name of a multi-band raster."""
    if spec.bands is not None:
        names = list(spec.bands)
        if len(names) != src.count:
            raise SourceError(
                f"{spec.path}: {len(names)} band names given for {spec.sensor!r} "
                f"({','.join(names)}) but the file has {src.count} bands"
            )
    else:
        if any(not d for d in src.descriptions):
            raise SourceError(
                f"{spec.path}: the file has {src.count} bands without (complete) band descriptions "
                f"{list(src.descriptions)}; name them with --bands {spec.sensor}="
                + ",".join(get_sensor(spec.sensor).band_names)
            )
        names = [str(d) for d in src.descriptions]
    found: dict[str, list[tuple[str, int]]] = {}
    for i, n in enumerate(names, start=1):
        found.setdefault(canonical_band_name(n), []).append((spec.path, i))
    return found


def _pick_bands(
    spec: SourceSpec,
    found: dict[str, list[tuple[str, int]]],
    handles: dict[str, rasterio.io.DatasetReader],
) -> list[tuple[str, str, int]]:
    """(name, file, index) for each band of the sensor's stem, the finest copy of each."""
    sensor = get_sensor(spec.sensor)
    missing = [b for b in sensor.band_names if b not in found]
    if missing:
        raise SourceError(
            f"{spec.path}: sensor {spec.sensor!r} needs band(s) {missing} which are not there "
            f"(found {sorted(found)})"
        )
    picked = []
    for name in sensor.band_names:
        cands = found[name]
        for path, _ in cands:
            if path not in handles:
                handles[path] = _open(path)
        best = min(_grid_of(handles[p]).res[0] for p, _ in cands)
        finest = [(p, i) for p, i in cands if math.isclose(_grid_of(handles[p]).res[0], best)]
        if len(finest) > 1:
            raise SourceError(
                f"{spec.path}: band {name} of {spec.sensor!r} is ambiguous: {[p for p, _ in finest]}"
            )
        picked.append((name, *finest[0]))
    return picked


def _nodata(spec: SourceSpec, src: rasterio.io.DatasetReader, index: int) -> float:
    if spec.nodata is not None:
        return float(spec.nodata)
    declared = src.nodatavals[index - 1]
    if declared is not None:
        return float(declared)
    return S2_NODATA if spec.sensor != "s1" else math.nan


def _factor(ref: Grid, g: Grid, path: str) -> tuple[int, int]:
    """Integer coarsening of ``g`` relative to ``ref``, or a SourceError."""
    rt, t = ref.transform, g.transform
    if rt.b or rt.d or t.b or t.d:
        if not t.almost_equals(rt, precision=1e-9 * max(abs(rt.a), abs(rt.e))):
            raise SourceError(
                f"{path}: rotated grid {tuple(t)[:6]} differs from the scene's {tuple(rt)[:6]}"
            )
        return 1, 1
    fy, fx = t.e / rt.e, t.a / rt.a
    f = (round(fy), round(fx))
    if min(f) < 1 or abs(fy - f[0]) > 1e-6 * fy or abs(fx - f[1]) > 1e-6 * fx:
        raise SourceError(
            f"{path}: pixel size {abs(t.a):g} x {abs(t.e):g} is not an integer multiple of the scene's "
            f"{abs(rt.a):g} x {abs(rt.e):g} (resample it onto the scene grid first, e.g. gdalwarp -tr)"
        )
    dx, dy = (t.c - rt.c) / rt.a, (t.f - rt.f) / rt.e
    # Corner misfit in scene pixels: origin offset plus pixel-size drift across the extent.
    drift_x = abs(t.a - rt.a * f[1]) * g.width / abs(rt.a)
    drift_y = abs(t.e - rt.e * f[0]) * g.height / abs(rt.e)
    if abs(dx) > GRID_TOL or abs(dy) > GRID_TOL or drift_x > GRID_TOL or drift_y > GRID_TOL:
        raise SourceError(
            f"{path}: grid {tuple(t)[:6]} is not aligned with the scene grid {tuple(rt)[:6]} "
            f"(origin off by {dx:.3g}, {dy:.3g} pixels)"
        )
    if g.height * f[0] < ref.height - f[0] + 1 or g.width * f[1] < ref.width - f[1] + 1:
        raise SourceError(
            f"{path}: covers {g.height} x {g.width} pixels at {f[0]}x coarser, less than the scene's "
            f"{ref.height} x {ref.width}"
        )
    return f


def _check_crs(scene_crs: str | None, g: Grid, path: str, ref_path: str) -> None:
    if (scene_crs is None) != (g.crs is None) or (
        scene_crs is not None
        and g.crs is not None
        and CRS.from_wkt(scene_crs) != CRS.from_wkt(g.crs)
    ):
        a = CRS.from_wkt(g.crs).to_string() if g.crs else "no CRS"
        b = CRS.from_wkt(scene_crs).to_string() if scene_crs else "no CRS"
        raise SourceError(f"{path}: CRS {a} differs from the CRS {b} of {ref_path}")


def _resolve(
    spec: SourceSpec, handles: dict[str, rasterio.io.DatasetReader]
) -> list[tuple[str, str, int]]:
    try:
        get_sensor(spec.sensor)
    except BandError as e:
        raise SourceError(f"{spec.path}: {e}") from None
    p = Path(spec.path)
    if p.is_dir():
        if spec.bands is not None:
            raise SourceError(
                f"{p}: --bands applies to a multi-band file, not to a folder of bands"
            )
        return _pick_bands(spec, _folder_bands(spec), handles)
    if not p.exists():
        raise SourceError(f"{p}: input for sensor {spec.sensor!r} does not exist")
    handles[spec.path] = _open(spec.path)
    return _pick_bands(spec, _raster_bands(spec, handles[spec.path]), handles)


def open_scene(specs: Sequence[SourceSpec]) -> Scene:
    """Resolve and check the sources of one scene.

    Raises:
        SourceError: unreadable files, missing bands, different CRS or misaligned grids.
    """
    if not specs:
        raise SourceError("no input given: pass at least one --input SENSOR=PATH")
    sensors = [s.sensor for s in specs]
    if len(set(sensors)) != len(sensors):
        raise SourceError(f"each sensor may be given once, got {sensors}")
    handles: dict[str, rasterio.io.DatasetReader] = {}
    try:
        picked = {s.sensor: _resolve(s, handles) for s in specs}
        grids = {path: _grid_of(h) for path, h in handles.items()}
        # The scene grid: the finest band grid, the first input's on a tie (errors name the others).
        used = [p for bands in picked.values() for _, p, _ in bands]
        ref_path = min(used, key=lambda p: (grids[p].res[0], used.index(p)))
        ref = grids[ref_path]
        sources: dict[str, SensorSource] = {}
        notes = []
        for spec in specs:
            bands = []
            for name, path, idx in picked[spec.sensor]:
                g = grids[path]
                _check_crs(ref.crs, g, path, ref_path)
                f = _factor(ref, g, path)
                if g.res[0] == ref.res[0] and (g.height, g.width) != (ref.height, ref.width):
                    raise SourceError(
                        f"{path}: {g.height} x {g.width} pixels, but {ref_path} on the same grid has "
                        f"{ref.height} x {ref.width}"
                    )
                nd = _nodata(spec, handles[path], idx)
                bands.append(BandFile(name, path, idx, nd, f, (g.height, g.width)))
            boa = spec.boa_offset
            if boa is None:
                boa = bool(find_boa_offset(spec.path)) if spec.sensor == "s2_l2a" else False
                if boa:
                    notes.append(
                        f"{spec.path}: product metadata declares BOA_ADD_OFFSET -1000; applied"
                    )
            if boa and spec.sensor != "s2_l2a":
                raise SourceError(
                    f"{spec.path}: the BOA offset applies to s2_l2a only, not {spec.sensor}"
                )
            sources[spec.sensor] = SensorSource(spec, bands, boa)
        if ref.crs is None:
            notes.append(f"{ref_path}: no CRS; the embedding raster will have none either")
        return Scene(sources, ref, notes)
    finally:
        for h in handles.values():
            h.close()
