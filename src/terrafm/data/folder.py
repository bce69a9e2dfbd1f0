"""A folder of co-registered GeoTIFFs (or JP2s) as a pretraining tile source.

A *scene* gives, per sensor, one multi-band raster or one raster per band (band name in the file
name, e.g. a Sentinel-2 SAFE's ``T33UUU_20170216T102101_B02.jp2``). Rasters may be any size and
any native resolution, but must cover the same footprint in the same CRS. The finest raster defines
the 10 m grid; coarser bands are resampled onto it (bilinear), and the grid is cut into
``tile_size`` px tiles (534 by default, like Major-TOM's large tiles).

Folder convention for :func:`discover_scenes`::

    <root>/<scene>/<sensor>/*.tif|*.tiff|*.jp2      sensor = s1 | s2_l1c | s2_l2a
    <root>/<scene>/worldcover.tif                   optional ESA WorldCover codes
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from terrafm.data.landcover import landcover_from_map, tile_classes
from terrafm.data.skips import SampleError
from terrafm.data.tiles import CellInfo, SensorTile, processing_baseline, tile_windows
from terrafm.io.geotiff import read_window, repair_crs
from terrafm.sensors import (
    BOA_ADD_OFFSET,
    SENSOR_KEYS,
    canonical_band_name,
    get_sensor,
    linear_to_db,
)

__all__ = ["GeoTiffFolderSource", "RasterScene", "discover_scenes"]

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?|VV|VH)$", re.IGNORECASE)


@dataclass
class RasterScene:
    """One co-registered scene.

    Attributes:
        name: scene name (used in messages and as the cell name).
        files: sensor -> raster paths: one multi-band file, or one file per band.
        bands: sensor -> band names of a multi-band file whose band descriptions are missing.
        s1_unit: ``dB`` or ``linear`` for the S1 rasters.
        product_id: Sentinel-2 product name, used to detect the baseline-04.00 offset.
        worldcover: optional WorldCover raster covering the scene.
    """

    name: str
    files: dict[str, list[str]]
    bands: dict[str, list[str]] = field(default_factory=dict)
    s1_unit: str = "dB"
    product_id: str | None = None
    worldcover: str | None = None


@dataclass(frozen=True)
class _BandRef:
    path: str
    index: int  # 1-based band index in the file


@dataclass(frozen=True)
class _Grid:
    crs: str | None
    bounds: tuple[float, float, float, float]
    shape: tuple[int, int]


def _open(path: str) -> rasterio.io.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _band_names(
    path: str, src: rasterio.io.DatasetReader, explicit: Sequence[str] | None
) -> list[str]:
    """Canonical band names of a raster: explicit, else descriptions, else the file name."""
    if explicit is not None and src.count > 1:
        names = list(explicit)
    elif src.count > 1 or any(src.descriptions):
        names = [d or "" for d in src.descriptions]
    else:
        m = _BAND_IN_NAME.search(Path(path).stem)
        names = [m.group(1)] if m else [""]
    if len(names) != src.count or not all(names):
        raise ValueError(
            f"{path}: cannot name its {src.count} band(s) (descriptions {src.descriptions}); "
            "put the band name in the file name or pass RasterScene.bands"
        )
    return [canonical_band_name(n) for n in names]


class GeoTiffFolderSource:
    """Tiles of co-registered per-sensor rasters.

    Args:
        scenes: the scenes (see :func:`discover_scenes`).
        sensors: sensors to read.
        tile_size: tile side in px of the 10 m grid; a scene smaller than that gives one tile of
            its shorter side.
        overlap_edges: cover the remainder at the right/bottom edge with one more, overlapping tile.
        require_all: drop scenes lacking a requested sensor (else keep those with at least one).
        harmonize: remove the +1000 DN offset when ``product_id`` says baseline >= 04.00.
    """

    def __init__(
        self,
        scenes: Sequence[RasterScene],
        sensors: Sequence[str],
        *,
        tile_size: int = 534,
        overlap_edges: bool = False,
        require_all: bool = True,
        harmonize: bool = True,
        name: str = "geotiff-folder",
    ) -> None:
        for s in sensors:
            get_sensor(s)
        self.name = name
        self.sensors = tuple(sensors)
        self.harmonize = harmonize
        self.report: Counter[str] = Counter()
        self._scenes: list[RasterScene] = []
        self._bands: list[dict[str, dict[str, _BandRef]]] = []
        self._grids: list[_Grid] = []
        self._windows: list[list[tuple[int, int, int, int]]] = []
        self._cells: list[CellInfo] = []
        for scene in scenes:
            self._add_scene(scene, tile_size, overlap_edges, require_all)

    def _add_scene(
        self, scene: RasterScene, tile_size: int, overlap: bool, require_all: bool
    ) -> None:
        bands = {s: self._resolve_bands(scene, s) for s in self.sensors if scene.files.get(s)}
        if not bands or (require_all and len(bands) < len(self.sensors)):
            missing = sorted(set(self.sensors) - set(bands))
            self.report["scenes_missing_sensor"] += 1
            warnings.warn(
                f"scene {scene.name}: no raster for sensors {missing}; skipped", stacklevel=3
            )
            return
        grid = _common_grid(scene.name, [r.path for b in bands.values() for r in b.values()])
        h, w = grid.shape
        size = min(tile_size, h, w)
        windows = [(r, c, size, size) for r, c in tile_windows(h, w, size, overlap)]
        lc, classes = None, None
        if scene.worldcover:
            with _open(scene.worldcover) as src:
                cmap = read_window(src, grid.shape, (0, 0, h, w), "nearest")[0]  # (H, W) codes
            lc, classes = landcover_from_map(scene.name, cmap), tile_classes(cmap, windows)
        self._scenes.append(scene)
        self._bands.append(bands)
        self._grids.append(grid)
        self._windows.append(windows)
        sensors = tuple(s for s in self.sensors if s in bands)
        self._cells.append(CellInfo(scene.name, sensors, len(windows), lc, classes))
        self.report["scenes_read"] += 1

    def _resolve_bands(self, scene: RasterScene, sensor: str) -> dict[str, _BandRef]:
        """Band name -> (file, band index) for every band the sensor's stem needs."""
        refs: dict[str, _BandRef] = {}
        for path in scene.files[sensor]:
            with _open(path) as src:
                for k, n in enumerate(_band_names(path, src, scene.bands.get(sensor)), start=1):
                    refs.setdefault(n, _BandRef(path, k))
        missing = [b for b in get_sensor(sensor).band_names if b not in refs]
        if missing:
            raise ValueError(
                f"scene {scene.name}: {sensor} lacks bands {missing}; found {sorted(refs)}"
            )
        return {b: refs[b] for b in get_sensor(sensor).band_names}

    def cells(self) -> list[CellInfo]:
        return self._cells

    def read_tile(
        self, cell: int, tile: int, sensors: Sequence[str]
    ) -> tuple[dict[str, SensorTile], list[SampleError]]:
        scene, grid, window = self._scenes[cell], self._grids[cell], self._windows[cell][tile]
        out: dict[str, SensorTile] = {}
        errors: list[SampleError] = []
        for s in sensors:
            where = f"scene {scene.name} tile {tile} ({s})"
            if s not in self._bands[cell]:
                errors.append(SampleError("missing_sensor", where, f"no {s} rasters"))
                continue
            try:
                out[s] = self._read_sensor(scene, self._bands[cell][s], s, grid, window)
            except SampleError as e:
                errors.append(e)
            except Exception as e:  # unreadable or truncated raster
                errors.append(SampleError("corrupt_geotiff", where, f"cannot read raster: {e}"))
        return out, errors

    def _read_sensor(
        self,
        scene: RasterScene,
        refs: Mapping[str, _BandRef],
        sensor: str,
        grid: _Grid,
        window: tuple[int, int, int, int],
    ) -> SensorTile:
        by_file: dict[str, list[tuple[str, int]]] = {}
        for b, r in refs.items():
            by_file.setdefault(r.path, []).append((b, r.index))
        arrays: dict[str, np.ndarray] = {}
        nodata: dict[str, float | None] = {}
        for path, items in by_file.items():
            with _open(path) as src:
                native_10m = abs(src.transform.a) <= abs(_pixel(grid)) * 1.01
                mode = "nearest" if native_10m else "bilinear"
                data = read_window(src, grid.shape, window, mode)  # (C_file, T, T)
                for b, k in items:
                    arrays[b], nodata[b] = data[k - 1], src.nodata
        order = get_sensor(sensor).band_names
        stack = np.stack([arrays[b].astype(np.float32) for b in order])  # (C, T, T)
        if sensor == "s1":
            return _s1_folder_tile(stack, [nodata[b] for b in order], scene.s1_unit)
        ten_m = [i for i, b in enumerate(order) if get_sensor(sensor).bands[i].gsd == 10]
        tags = [nodata[order[i]] if nodata[order[i]] is not None else 0.0 for i in ten_m]
        empty = np.all([stack[i] == t for i, t in zip(ten_m, tags)], axis=0)
        baseline = processing_baseline(scene.product_id or "")
        if self.harmonize and baseline is not None and baseline >= 400:
            stack -= BOA_ADD_OFFSET
        return SensorTile(stack, ~empty)


def _pixel(grid: _Grid) -> float:
    return (grid.bounds[2] - grid.bounds[0]) / grid.shape[1]


def _s1_folder_tile(stack: np.ndarray, tags: list[float | None], unit: str) -> SensorTile:
    valid = np.all(np.isfinite(stack), axis=0)
    for k, t in enumerate(tags):
        if t is not None and np.isfinite(t):
            valid &= stack[k] != t
    if unit.lower() == "linear":
        valid &= np.all(stack > 0, axis=0)
        stack = np.asarray(linear_to_db(stack), dtype=np.float32)
    elif unit.lower() != "db":
        raise ValueError(f"s1_unit must be 'dB' or 'linear', got {unit!r}")
    return SensorTile(stack, valid)


def _common_grid(scene: str, paths: Sequence[str]) -> _Grid:
    """The finest raster's grid; every raster must share its CRS and footprint."""
    grids = []
    for p in dict.fromkeys(paths):
        with _open(p) as src:
            crs = repair_crs(src.crs.to_string()) if src.crs else None
            b = src.bounds
            grids.append(
                (p, _Grid(crs, (b.left, b.bottom, b.right, b.top), (src.height, src.width)))
            )
    ref_path, ref = max(grids, key=lambda g: g[1].shape[0] * g[1].shape[1])
    for p, g in grids:
        coarse = max(
            (g.bounds[2] - g.bounds[0]) / g.shape[1], (g.bounds[3] - g.bounds[1]) / g.shape[0]
        )
        if g.crs != ref.crs or max(abs(a - b) for a, b in zip(g.bounds, ref.bounds)) > coarse / 2:
            raise ValueError(
                f"scene {scene}: {p} (crs {g.crs}, bounds {g.bounds}) is not co-registered with "
                f"{ref_path} (crs {ref.crs}, bounds {ref.bounds})"
            )
    return ref


def discover_scenes(
    root: str | Path, s1_unit: str = "dB", sensors: Sequence[str] = SENSOR_KEYS
) -> list[RasterScene]:
    """Scenes under ``root`` laid out as ``<scene>/<sensor>/*.tif`` (see the module docstring)."""
    root = Path(root)
    scenes = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {
            s: sorted(str(f) for f in (d / s).iterdir() if f.suffix.lower() in _RASTER_SUFFIXES)
            for s in sensors
            if (d / s).is_dir()
        }
        files = {s: f for s, f in files.items() if f}
        if files:
            wc = d / "worldcover.tif"
            scenes.append(
                RasterScene(
                    d.name, files, s1_unit=s1_unit, worldcover=str(wc) if wc.exists() else None
                )
            )
    if not scenes:
        raise FileNotFoundError(
            f"no scenes under {root}: expected <scene>/<sensor>/*.tif with sensor in {list(sensors)}"
        )
    return scenes
