"""Model-ready windows of a scene: validity, normalisation, patch validity (docs/design.md, "Sensors and units").

Each reader thread owns a :class:`WindowReader` with its own :class:`terrafm.io.scene.SceneReader`
(its own open datasets: GDAL handles are not shared across threads), which reads the part of a
window inside the scene; pixels beyond the scene edge (the last partial patch) are nodata. Values are normalised with
:func:`terrafm.sensors.normalize`, and nodata pixels are then set to 0 (the band mean after
z-scoring) so the model never sees NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from terrafm.io.scene import Scene, SceneReader
from terrafm.sensors import normalize

__all__ = ["WindowData", "WindowReader"]


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


class WindowReader:
    """Model-ready windows of a :class:`Scene` (use one per thread; close it when done).

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
        self.s1_unit = s1_unit
        self.patch = patch
        self.raw = SceneReader(scene, resampling)

    def close(self) -> None:
        self.raw.close()

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
            raw, v = self.raw.read_sensor(sensor, row, col, h_in, w_in)
            own = np.zeros((height, width), dtype=bool)
            own[:h_in, :w_in] = v
            valid &= own
            x = normalize(raw, sensor, s1_unit=self.s1_unit, boa_offset=src.boa_offset).numpy()
            full = np.zeros((x.shape[0], height, width), dtype=np.float32)
            full[:, :h_in, :w_in] = x
            full[:, ~own] = 0.0  # nodata -> the band mean after z-scoring
            inputs[sensor], sensor_valid[sensor] = full, own
        return WindowData(inputs, valid, _patch_fraction(valid, self.patch), sensor_valid)
