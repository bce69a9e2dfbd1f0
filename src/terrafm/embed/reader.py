"""Read one window of a scene: raw bands, validity, normalisation, patch validity (docs/design.md, "Sensors and units").

Each reader thread owns a :class:`SceneReader` with its own open datasets (GDAL handles are not
shared across threads). A window is read with rasterio windowed reads, only the part inside the
scene; pixels beyond the scene edge (the last partial patch) are nodata. Values are normalised with
:func:`terrafm.sensors.normalize`, and nodata pixels are then set to 0 (the band mean after
z-scoring) so the model never sees NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from terrafm.embed.sources import BandFile, Scene, SourceError
from terrafm.io.resample import axis_map, upsample
from terrafm.sensors import normalize

__all__ = ["SceneReader", "WindowData"]


def _patch_fraction(valid: np.ndarray, p: int) -> np.ndarray:
    """(h/p, w/p) float32 fraction of valid pixels per patch of an (h, w) bool mask."""
    h, w = valid.shape
    return (
        valid.reshape(h // p, p, w // p, p).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    )


@dataclass
class WindowData:
    """A window ready for the model.

    Attributes:
        inputs: sensor -> (C, h, w) float32 normalised values, 0 where that sensor is nodata.
        valid: (h, w) bool, True where every sensor has every band.
        patch_valid: (h/16, w/16) fraction of ``valid`` pixels per patch.
        sensor_valid: sensor -> (h, w) bool, True where that sensor has every band.
    """

    inputs: dict[str, np.ndarray]
    valid: np.ndarray
    patch_valid: np.ndarray
    sensor_valid: dict[str, np.ndarray] = field(default_factory=dict)

    def use(self, sensors: Sequence[str], patch: int = 16) -> WindowData:
        """The window as the model sees it with only ``sensors``: their values are set to 0 (the
        band mean after z-scoring) wherever one of them is nodata, the other sensors are all 0,
        and ``valid`` / ``patch_valid`` are those of ``sensors`` together."""
        valid = np.ones_like(self.valid)
        for s in sensors:
            valid &= self.sensor_valid[s]
        inputs = {}
        for s, x in self.inputs.items():
            if s in sensors:
                x = x.copy()
                x[:, ~valid] = 0.0
            else:
                x = np.zeros_like(x)
            inputs[s] = x
        return WindowData(inputs, valid, _patch_fraction(valid, patch), self.sensor_valid)


def _valid_values(x: np.ndarray, nodata: float) -> np.ndarray:
    ok = np.isfinite(x)
    if not math.isnan(nodata):
        ok &= x != nodata
    return ok


class SceneReader:
    """Windowed reads of a :class:`Scene` (use one per thread; close it when done).

    Args:
        scene: the checked scene.
        resampling: ``bilinear`` or ``nearest`` for bands coarser than the scene grid.
        s1_unit: unit of the S1 values on disk (``dB`` or ``linear``).
        patch: model patch size.
    """

    def __init__(
        self, scene: Scene, resampling: str = "bilinear", s1_unit: str = "dB", patch: int = 16
    ):
        self.scene = scene
        self.resampling = resampling
        self.s1_unit = s1_unit
        self.patch = patch
        self._handles: dict[str, rasterio.io.DatasetReader] = {}

    def _handle(self, path: str) -> rasterio.io.DatasetReader:
        h = self._handles.get(path)
        if h is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    h = rasterio.open(path)
            except (RasterioError, OSError) as e:
                raise SourceError(f"{path}: cannot open as a raster ({e})") from e
            self._handles[path] = h
        return h

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def _read_group(
        self, bands: list[BandFile], r0: int, c0: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bands of one file on one grid, resampled to scene pixels ``[r0, r0+h) x [c0, c0+w)``."""
        b0 = bands[0]
        fy, fx = b0.factor
        rows = axis_map(r0, h, fy, b0.shape[0], self.resampling)
        cols = axis_map(c0, w, fx, b0.shape[1], self.resampling)
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
            valid &= _valid_values(raw[i], b.nodata)
        if (fy, fx) == (1, 1):
            return raw, valid
        return upsample(raw, valid, rows, cols)

    def _read_sensor(
        self, sensor: str, r0: int, c0: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw (C, h, w) values of one sensor in stem order, and their (h, w) validity."""
        bands = self.scene.sources[sensor].bands
        out = np.empty((len(bands), h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        groups: dict[tuple[str, tuple[int, int]], list[int]] = {}
        for i, b in enumerate(bands):
            groups.setdefault((b.path, b.factor), []).append(i)
        for idx in groups.values():
            data, v = self._read_group([bands[i] for i in idx], r0, c0, h, w)
            out[idx] = data
            valid &= v
        return out, valid

    def read(self, row: int, col: int, height: int, width: int) -> WindowData:
        """Read, validate and normalise the window at input pixel ``(row, col)``.

        The window may extend past the scene's bottom/right edge by less than a patch; that part
        is nodata.
        """
        g = self.scene.grid
        h_in, w_in = min(height, g.height - row), min(width, g.width - col)
        valid = np.zeros((height, width), dtype=bool)
        valid[:h_in, :w_in] = True
        inputs: dict[str, np.ndarray] = {}
        sensor_valid: dict[str, np.ndarray] = {}
        for sensor, src in self.scene.sources.items():
            raw, v = self._read_sensor(sensor, row, col, h_in, w_in)
            own = np.zeros((height, width), dtype=bool)
            own[:h_in, :w_in] = v
            valid &= own
            x = normalize(raw, sensor, s1_unit=self.s1_unit, boa_offset=src.boa_offset).numpy()
            full = np.zeros((x.shape[0], height, width), dtype=np.float32)
            full[:, :h_in, :w_in] = x
            full[:, ~own] = 0.0  # nodata -> the band mean after z-scoring
            inputs[sensor], sensor_valid[sensor] = full, own
        return WindowData(inputs, valid, _patch_fraction(valid, self.patch), sensor_valid)
