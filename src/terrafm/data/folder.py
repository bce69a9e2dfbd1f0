"""A folder of co-registered GeoTIFFs (or JP2s) as a pretraining tile source.

A *scene* gives, per sensor, one multi-band raster or one raster per band (band name in the file
name, e.g. a Sentinel-2 SAFE's ``T33UUU_20170216T102101_B02.jp2``). Rasters may be any size and
any native resolution, but must cover the same footprint in the same CRS. Scenes are opened and
read by :mod:`terrafm.io.scene` (its ``footprint`` rule; docs/design.md, "Raster I/O"): the
finest raster defines the 10 m grid, coarser bands are resampled onto it (bilinear), and the grid
is cut into ``tile_size`` px tiles (534 by default, like Major-TOM's large tiles).

Folder convention for :func:`discover_scenes`::

    <root>/<scene>/<sensor>/*.tif|*.tiff|*.jp2|*.vrt|*.img     sensor = s1 | s2_l1c | s2_l2a
    <root>/<scene>/worldcover.tif                              optional ESA WorldCover codes
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terrafm.data.landcover import landcover_from_map, tile_classes
from terrafm.data.skips import SampleError
from terrafm.data.tiles import CellInfo, SensorTile, processing_baseline, tile_windows
from terrafm.io.geotiff import read_window
from terrafm.io.scene import (
    RASTER_SUFFIXES,
    Scene,
    SceneReader,
    SourceSpec,
    open_raster,
    open_scene,
)
from terrafm.sensors import BOA_ADD_OFFSET, SENSOR_KEYS, get_sensor, linear_to_db

__all__ = ["GeoTiffFolderSource", "RasterScene", "discover_scenes"]


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
        self._opened: list[Scene] = []
        self._windows: list[list[tuple[int, int, int, int]]] = []
        self._cells: list[CellInfo] = []
        for scene in scenes:
            self._add_scene(scene, tile_size, overlap_edges, require_all)

    def _add_scene(
        self, scene: RasterScene, tile_size: int, overlap: bool, require_all: bool
    ) -> None:
        present = [s for s in self.sensors if scene.files.get(s)]
        if not present or (require_all and len(present) < len(self.sensors)):
            missing = sorted(set(self.sensors) - set(present))
            self.report["scenes_missing_sensor"] += 1
            warnings.warn(
                f"scene {scene.name}: no raster for sensors {missing}; skipped", stacklevel=3
            )
            return
        specs = [
            SourceSpec(
                s,
                tuple(str(f) for f in scene.files[s]),
                bands=tuple(scene.bands[s]) if scene.bands.get(s) else None,
                boa_offset=False,  # the baseline offset comes from product_id (harmonize)
            )
            for s in present
        ]
        opened = open_scene(specs, grid="footprint", name=scene.name)
        h, w = opened.grid.height, opened.grid.width
        size = min(tile_size, h, w)
        windows = [(r, c, size, size) for r, c in tile_windows(h, w, size, overlap)]
        lc, classes = None, None
        if scene.worldcover:
            with open_raster(str(scene.worldcover)) as src:
                cmap = read_window(src, (h, w), (0, 0, h, w), "nearest")[0]  # (H, W) codes
            lc, classes = landcover_from_map(scene.name, cmap), tile_classes(cmap, windows)
        self._scenes.append(scene)
        self._opened.append(opened)
        self._windows.append(windows)
        self._cells.append(CellInfo(scene.name, tuple(present), len(windows), lc, classes))
        self.report["scenes_read"] += 1

    def cells(self) -> list[CellInfo]:
        return self._cells

    def read_tile(
        self, cell: int, tile: int, sensors: Sequence[str]
    ) -> tuple[dict[str, SensorTile], list[SampleError]]:
        scene, opened = self._scenes[cell], self._opened[cell]
        out: dict[str, SensorTile] = {}
        errors: list[SampleError] = []
        with SceneReader(opened) as reader:
            for s in sensors:
                where = f"scene {scene.name} tile {tile} ({s})"
                if s not in opened.sources:
                    errors.append(SampleError("missing_sensor", where, f"no {s} rasters"))
                    continue
                try:
                    out[s] = self._read_sensor(reader, scene, s, self._windows[cell][tile])
                except SampleError as e:
                    errors.append(e)
                except Exception as e:  # unreadable or truncated raster
                    errors.append(SampleError("corrupt_geotiff", where, f"cannot read raster: {e}"))
        return out, errors

    def _read_sensor(
        self,
        reader: SceneReader,
        scene: RasterScene,
        sensor: str,
        window: tuple[int, int, int, int],
    ) -> SensorTile:
        stack, _ = reader.read_sensor(sensor, *window)  # (C, T, T) float32, stem order
        bands = reader.scene.sources[sensor].bands
        if sensor == "s1":
            return _s1_folder_tile(stack, [b.nodata for b in bands], scene.s1_unit)
        # A pixel is empty when every 10 m band holds the nodata value (Sentinel-2: DN 0).
        ten_m = [i for i, b in enumerate(get_sensor(sensor).bands) if b.gsd == 10]
        empty = np.all([stack[i] == bands[i].nodata for i in ten_m], axis=0)
        baseline = processing_baseline(scene.product_id or "")
        if self.harmonize and baseline is not None and baseline >= 400:
            stack -= BOA_ADD_OFFSET
        return SensorTile(stack, ~empty)


def _s1_folder_tile(stack: np.ndarray, tags: list[float], unit: str) -> SensorTile:
    valid = np.all(np.isfinite(stack), axis=0)
    for k, t in enumerate(tags):
        if np.isfinite(t):
            valid &= stack[k] != t
    if unit.lower() == "linear":
        valid &= np.all(stack > 0, axis=0)
        stack = np.asarray(linear_to_db(stack), dtype=np.float32)
    elif unit.lower() != "db":
        raise ValueError(f"s1_unit must be 'dB' or 'linear', got {unit!r}")
    return SensorTile(stack, valid)


def discover_scenes(
    root: str | Path, s1_unit: str = "dB", sensors: Sequence[str] = SENSOR_KEYS
) -> list[RasterScene]:
    """Scenes under ``root`` laid out as ``<scene>/<sensor>/*.tif`` (see the module docstring)."""
    root = Path(root)
    scenes = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {
            s: sorted(str(f) for f in (d / s).iterdir() if f.suffix.lower() in RASTER_SUFFIXES)
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
