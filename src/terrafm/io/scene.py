"""Scenes: the rasters of one or more sensors on one pixel grid (docs/design.md, "Raster I/O").

The one scene reader, used by pretraining from folders (:mod:`terrafm.data.folder`) and by scene
embedding (:mod:`terrafm.embed`). :func:`open_scene` finds the bands of each sensor, checks that
all of them lie on one grid and returns a :class:`Scene`; :class:`SceneReader` reads windows of
it onto the scene grid.

Where the bands are (:class:`SourceSpec.path`):

- a multi-band raster (GeoTIFF, JP2, VRT ...), its bands named by ``SourceSpec.bands`` or else by
  its band descriptions;
- a folder of one file per band, the band name in the file name: a Sentinel-2 SAFE ``IMG_DATA``
  folder (``T33UUU_20170216T102101_B8A.jp2``; L2A ``R10m/..._B02_10m.jp2``), or Sentinel-1
  ``..._VV.tif`` / ``s1a-iw-grd-vh-....tiff``; files without a band name (``TCI``, ``SCL``) are
  left out;
- a list of raster files: multi-band files named as above, single-band files by their band
  description or else the band name in the file name.

Bands are matched by name, never by position; when a band exists at several resolutions the finest
copy is used. The scene grid is the finest band grid, and every band must share its CRS and:

- ``grid="lattice"`` (embedding: the output raster's pixels are the input's): be an integer
  coarsening of the scene grid with the same origin (20 m and 60 m Sentinel-2 bands);
- ``grid="footprint"`` (pretraining tiles): cover the same footprint, to half of its own pixel, at
  any resolution.

Anything else is a :class:`SourceError` naming the file. Bands on a coarser grid are resampled
with :mod:`terrafm.io.resample` (the same sampling as every other reader in terrafm).

Nodata: the given override, else the file's declared nodata value, else the sensor default
(Sentinel-2: DN 0, the products' NO_DATA value; Sentinel-1: none). NaN and infinite values are
always nodata.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window as RioWindow

from terrafm.errors import DataError
from terrafm.io.resample import RESAMPLING, axis_map, upsample
from terrafm.sensors import BandError, canonical_band_name, get_sensor

__all__ = [
    "GRID_RULES",
    "RASTER_SUFFIXES",
    "BandFile",
    "Grid",
    "Scene",
    "SceneReader",
    "SensorSource",
    "SourceError",
    "SourceSpec",
    "band_token",
    "find_boa_offset",
    "open_raster",
    "open_scene",
    "valid_values",
]

RASTER_SUFFIXES = (".jp2", ".tif", ".tiff", ".vrt", ".img")
# Sentinel-2 products mark missing pixels with DN 0 (NO_DATA); SAFE JP2 files do not declare it.
S2_NODATA = 0.0
# Lattice grids agree when corners differ by less than this fraction of a pixel.
GRID_TOL = 0.01
GRID_RULES = ("lattice", "footprint")

_S2_TOKEN = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?)(?=$|[_\-.])", re.IGNORECASE)
_S1_TOKEN = re.compile(r"(?:^|[_\-.])(VV|VH|HH|HV)(?=$|[_\-.])", re.IGNORECASE)


class SourceError(DataError, ValueError):
    """A scene input that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SourceSpec:
    """Where one sensor's bands are, and how to read them.

    Attributes:
        sensor: ``s1``, ``s2_l1c`` or ``s2_l2a``.
        path: a multi-band raster, a folder of one file per band, or a tuple of raster files.
        bands: names of a multi-band raster's bands in file order (overrides its descriptions).
        nodata: override of the nodata value; ``math.nan`` = only NaN is nodata.
        boa_offset: subtract the L2A BOA offset; ``None`` = read it from the SAFE metadata.
    """

    sensor: str
    path: str | tuple[str, ...]
    bands: tuple[str, ...] | None = None
    nodata: float | None = None
    boa_offset: bool | None = None

    @property
    def where(self) -> str:
        """The input as messages name it: the path, or the folder holding a list of files."""
        if isinstance(self.path, str):
            return self.path
        if len(self.path) == 1:
            return self.path[0]
        try:
            common = os.path.commonpath(self.path)
        except ValueError:  # absolute and relative paths mixed
            common = ""
        return common or ", ".join(self.path)


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
        factor: (rows, cols) coarsening of the file's grid relative to the scene grid (integer
            for ``grid="lattice"``; the nearest integer for ``grid="footprint"``).
        shape: the file's (height, width).
        span: scene-grid pixels that the file's full extent covers, (rows, cols): ``shape *
            factor`` on a lattice (it may pass the scene's edge by less than one file pixel), the
            scene's shape for a footprint match. Resampling maps ``shape`` onto ``span``.
    """

    name: str
    path: str
    index: int
    nodata: float
    factor: tuple[int, int] = (1, 1)
    shape: tuple[int, int] = (0, 0)
    span: tuple[int, int] = (0, 0)


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


def open_raster(path: str) -> rasterio.io.DatasetReader:
    """Open a raster file, or raise a :class:`SourceError` naming it."""
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


def band_token(sensor: str, filename: str) -> str | None:
    """The canonical band name in a file name (``..._B8A.jp2`` -> ``B8A``), if exactly one."""
    pattern = _S1_TOKEN if sensor == "s1" else _S2_TOKEN
    hits = pattern.findall(Path(filename).stem)
    if len(hits) != 1:
        return None
    return canonical_band_name(hits[0])


_Found = dict[str, list[tuple[str, int]]]  # canonical band name -> candidate (file, band index)


def _folder_bands(spec: SourceSpec, folder: Path) -> _Found:
    """Candidates in a one-file-per-band folder: files with a band name in the file name."""
    found: _Found = {}
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() not in RASTER_SUFFIXES or not f.is_file():
            continue
        name = band_token(spec.sensor, f.name)
        if name is not None:
            found.setdefault(name, []).append((str(f), 1))
    if not found:
        raise SourceError(
            f"{folder}: no raster file with a band name in its file name (like '..._B02.jp2' or "
            f"'..._VV.tif') for sensor {spec.sensor!r}"
        )
    return found


def _file_band_names(spec: SourceSpec, path: str, src: rasterio.io.DatasetReader) -> list[str]:
    """Band names of one file: explicit (multi-band), else descriptions, else the file name."""
    descriptions = list(src.descriptions)
    if spec.bands is not None and (src.count > 1 or isinstance(spec.path, str)):
        if len(spec.bands) != src.count:
            raise SourceError(
                f"{path}: {len(spec.bands)} band names given for {spec.sensor!r} "
                f"({','.join(spec.bands)}) but the file has {src.count} bands"
            )
        return list(spec.bands)
    if all(descriptions):
        return [str(d) for d in descriptions]
    if src.count == 1 and (token := band_token(spec.sensor, path)) is not None:
        return [token]
    raise SourceError(
        f"{path}: cannot name its {src.count} band(s): no (complete) band descriptions "
        f"{descriptions}; name them in file order (SourceSpec.bands; on the command line "
        f"--bands {spec.sensor}=" + ",".join(get_sensor(spec.sensor).band_names) + ") "
        "or put the band name in the file name"
    )


def _file_bands(
    spec: SourceSpec, paths: Sequence[str], handles: dict[str, rasterio.io.DatasetReader]
) -> _Found:
    """Candidates of a list of raster files (one multi-band file or one file per band)."""
    found: _Found = {}
    for path in paths:
        if not Path(path).exists():
            raise SourceError(f"{path}: input for sensor {spec.sensor!r} does not exist")
        if path not in handles:
            handles[path] = open_raster(path)
        for i, n in enumerate(_file_band_names(spec, path, handles[path]), start=1):
            found.setdefault(canonical_band_name(n), []).append((path, i))
    return found


def _pick_bands(
    spec: SourceSpec, found: _Found, handles: dict[str, rasterio.io.DatasetReader]
) -> list[tuple[str, str, int]]:
    """(name, file, index) for each band of the sensor's stem, the finest copy of each."""
    sensor = get_sensor(spec.sensor)
    missing = [b for b in sensor.band_names if b not in found]
    if missing:
        raise SourceError(
            f"{spec.where}: sensor {spec.sensor!r} needs band(s) {missing} which are not there "
            f"(found {sorted(found)})"
        )
    picked = []
    for name in sensor.band_names:
        cands = found[name]
        for path, _ in cands:
            if path not in handles:
                handles[path] = open_raster(path)
        best = min(_grid_of(handles[p]).res[0] for p, _ in cands)
        finest = [(p, i) for p, i in cands if math.isclose(_grid_of(handles[p]).res[0], best)]
        if len(finest) > 1:
            raise SourceError(
                f"{spec.where}: band {name} of {spec.sensor!r} is ambiguous: "
                f"{[p for p, _ in finest]}"
            )
        picked.append((name, *finest[0]))
    return picked


def _resolve(
    spec: SourceSpec, handles: dict[str, rasterio.io.DatasetReader]
) -> list[tuple[str, str, int]]:
    try:
        get_sensor(spec.sensor)
    except BandError as e:
        raise SourceError(f"{spec.where}: {e}") from None
    if isinstance(spec.path, str) and Path(spec.path).is_dir():
        if spec.bands is not None:
            raise SourceError(
                f"{spec.path}: --bands applies to a multi-band file, not to a folder of bands"
            )
        return _pick_bands(spec, _folder_bands(spec, Path(spec.path)), handles)
    paths = [spec.path] if isinstance(spec.path, str) else list(spec.path)
    return _pick_bands(spec, _file_bands(spec, paths, handles), handles)


def _nodata(spec: SourceSpec, src: rasterio.io.DatasetReader, index: int) -> float:
    if spec.nodata is not None:
        return float(spec.nodata)
    declared = src.nodatavals[index - 1]
    if declared is not None:
        return float(declared)
    return S2_NODATA if spec.sensor != "s1" else math.nan


def _lattice_factor(ref: Grid, g: Grid, path: str) -> tuple[int, int]:
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


def _bounds(g: Grid) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a north-up grid."""
    t = g.transform
    xs, ys = (t.c, t.c + t.a * g.width), (t.f, t.f + t.e * g.height)
    return min(xs), min(ys), max(xs), max(ys)


def _footprint_factor(ref: Grid, g: Grid, path: str, ref_path: str) -> tuple[int, int]:
    """Nearest-integer coarsening of ``g``, which must cover ``ref``'s footprint to half a pixel."""
    b, rb = _bounds(g), _bounds(ref)
    coarse = max((b[2] - b[0]) / g.width, (b[3] - b[1]) / g.height)
    if max(abs(x - y) for x, y in zip(b, rb)) > coarse / 2:
        raise SourceError(
            f"{path} (bounds {b}) is not co-registered with {ref_path} (bounds {rb}): the "
            "footprints differ by more than half a pixel"
        )
    return max(1, round(ref.height / g.height)), max(1, round(ref.width / g.width))


def _check_crs(scene_crs: str | None, g: Grid, path: str, ref_path: str) -> None:
    if (scene_crs is None) != (g.crs is None) or (
        scene_crs is not None
        and g.crs is not None
        and CRS.from_wkt(scene_crs) != CRS.from_wkt(g.crs)
    ):
        a = CRS.from_wkt(g.crs).to_string() if g.crs else "no CRS"
        b = CRS.from_wkt(scene_crs).to_string() if scene_crs else "no CRS"
        raise SourceError(f"{path}: CRS {a} differs from the CRS {b} of {ref_path}")


def open_scene(
    specs: Sequence[SourceSpec], *, grid: str = "lattice", name: str | None = None
) -> Scene:
    """Find the bands of each sensor and check that they lie on one grid.

    Args:
        specs: one per sensor.
        grid: ``lattice`` (integer coarsenings of the scene grid, same origin) or ``footprint``
            (same footprint, any resolution); see the module docstring.
        name: the scene's name, put before every message.

    Raises:
        SourceError: unreadable files, missing bands, different CRS or misaligned grids.
    """
    if grid not in GRID_RULES:
        raise ValueError(f"grid must be one of {GRID_RULES}, got {grid!r}")
    try:
        return _open_scene(specs, grid)
    except SourceError as e:
        if name is None:
            raise
        raise SourceError(f"scene {name}: {e}") from e


def _open_scene(specs: Sequence[SourceSpec], rule: str) -> Scene:
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
            for band, path, idx in picked[spec.sensor]:
                g = grids[path]
                _check_crs(ref.crs, g, path, ref_path)
                if rule == "footprint":
                    f = _footprint_factor(ref, g, path, ref_path)
                    span = (ref.height, ref.width)
                else:
                    f = _lattice_factor(ref, g, path)
                    span = (g.height * f[0], g.width * f[1])
                if g.res[0] == ref.res[0] and (g.height, g.width) != (ref.height, ref.width):
                    raise SourceError(
                        f"{path}: {g.height} x {g.width} pixels, but {ref_path} on the same grid has "
                        f"{ref.height} x {ref.width}"
                    )
                nd = _nodata(spec, handles[path], idx)
                bands.append(BandFile(band, path, idx, nd, f, (g.height, g.width), span))
            boa = spec.boa_offset
            if boa is None:
                boa = bool(find_boa_offset(spec.where)) if spec.sensor == "s2_l2a" else False
                if boa:
                    notes.append(
                        f"{spec.where}: product metadata declares BOA_ADD_OFFSET -1000; applied"
                    )
            if boa and spec.sensor != "s2_l2a":
                raise SourceError(
                    f"{spec.where}: the BOA offset applies to s2_l2a only, not {spec.sensor}"
                )
            sources[spec.sensor] = SensorSource(spec, bands, boa)
        if ref.crs is None:
            notes.append(f"{ref_path}: no CRS; the embedding raster will have none either")
        return Scene(sources, ref, notes)
    finally:
        for h in handles.values():
            h.close()


def valid_values(x: np.ndarray, nodata: float) -> np.ndarray:
    """True where ``x`` is finite and not the ``nodata`` value (NaN ``nodata``: finite only)."""
    ok = np.isfinite(x)
    if not math.isnan(nodata):
        ok &= x != nodata
    return ok


class SceneReader:
    """Window reads of a :class:`Scene` onto its grid (one per thread or process; close it).

    Each reader owns its open datasets (GDAL handles are not shared across threads), opened on
    first use. Only the file pixels a window needs are decoded.

    Args:
        scene: the checked scene.
        resampling: ``bilinear`` or ``nearest`` for bands coarser than the scene grid.
    """

    def __init__(self, scene: Scene, resampling: str = "bilinear") -> None:
        if resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {RESAMPLING}, got {resampling!r}")
        self.scene = scene
        self.resampling = resampling
        self._handles: dict[str, rasterio.io.DatasetReader] = {}

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _handle(self, path: str) -> rasterio.io.DatasetReader:
        h = self._handles.get(path)
        if h is None:
            h = self._handles[path] = open_raster(path)
        return h

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def _read_file(
        self, bands: list[BandFile], r0: int, c0: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bands of one file, resampled to scene pixels ``[r0, r0+h) x [c0, c0+w)``."""
        b0 = bands[0]
        rows = axis_map(r0, h, b0.shape[0], b0.span[0], self.resampling)
        cols = axis_map(c0, w, b0.shape[1], b0.span[1], self.resampling)
        win = RioWindow(cols.base, rows.base, cols.stop - cols.base, rows.stop - rows.base)
        try:
            raw = self._handle(b0.path).read(
                [b.index for b in bands], window=win, out_dtype="float32"
            )
        except (RasterioError, OSError) as e:
            raise SourceError(
                f"{b0.path}: cannot read bands {[b.name for b in bands]} at rows "
                f"{rows.base}:{rows.stop}, cols {cols.base}:{cols.stop} ({e})"
            ) from e
        valid = np.ones(raw.shape[1:], dtype=bool)
        for i, b in enumerate(bands):
            valid &= valid_values(raw[i], b.nodata)
        if b0.shape == b0.span:
            return raw, valid
        return upsample(raw, valid, rows, cols)

    def read_sensor(
        self, sensor: str, row: int, col: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One sensor's window inside the scene grid.

        Returns:
            ``(values, valid)``: (C, height, width) float32 file values in the stem's band order
            (coarser bands resampled), and (height, width) bool, True where every band is valid
            (a resampled pixel is valid only if every file pixel it draws from is).
        """
        bands = self.scene.sources[sensor].bands
        out = np.empty((len(bands), height, width), dtype=np.float32)
        valid = np.ones((height, width), dtype=bool)
        by_file: dict[str, list[int]] = {}
        for i, b in enumerate(bands):
            by_file.setdefault(b.path, []).append(i)
        for idx in by_file.values():
            data, v = self._read_file([bands[i] for i in idx], row, col, height, width)
            out[idx] = data
            valid &= v
        return out, valid
