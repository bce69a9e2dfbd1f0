"""Turning one labelled scene into a task folder (contract C) by cutting it into tiles.

For users with a co-registered scene (one raster per sensor and a label raster), and for the
real-data benchmark (the Sen1Floods11 chip): :func:`scene_to_folder` cuts every raster into square
tiles, maps label values to class indices (others to ``ignore_index``), assigns each tile to a
split by its column (left part train, then val, then test: spatially disjoint splits) and writes
the folder with :func:`terrafm.eval.datasets.folder.write_folder_task`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terrafm.eval.datasets.folder import FolderSample, write_folder_task

__all__ = ["SceneRaster", "scene_to_folder"]


@dataclass
class SceneRaster:
    """One sensor's raster: data (C, H, W), channel names and unit."""

    data: np.ndarray
    bands: Sequence[str]
    unit: str


def _split_of(col: int, cols: int, fractions: tuple[float, float, float]) -> str:
    x = (col + 0.5) / cols
    if x < fractions[0]:
        return "train"
    return "val" if x < fractions[0] + fractions[1] else "test"


def scene_to_folder(
    root: str | Path,
    name: str,
    rasters: Mapping[str, SceneRaster],
    label: np.ndarray,
    classes: Mapping[int, str],
    tile: int = 64,
    fractions: tuple[float, float, float] = (0.5, 0.0, 0.5),
    ignore_index: int = 255,
    min_labelled: float = 0.5,
) -> Path:
    """Write a segmentation task folder from one scene.

    Args:
        root: output folder.
        name: task name.
        rasters: sensor key -> raster, all with the label's height and width.
        label: (H, W) label raster.
        classes: label value -> class name; class indices follow this mapping's order, any other
            value becomes ``ignore_index``.
        tile: tile size in pixels (multiple of 16).
        fractions: train/val/test share of tile columns, left to right.
        ignore_index: mask value of unlabelled pixels.
        min_labelled: tiles with a smaller labelled fraction are dropped.
    """
    h, w = label.shape
    for key, r in rasters.items():
        if r.data.shape[-2:] != (h, w):
            raise ValueError(f"{key}: raster {r.data.shape[-2:]} does not match the label {(h, w)}")
    mask = np.full((h, w), ignore_index, dtype=np.uint8)
    for idx, value in enumerate(classes):
        mask[label == value] = idx
    rows, cols = h // tile, w // tile
    samples = []
    for i in range(rows):
        for j in range(cols):
            win = np.s_[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile]
            m = mask[win]
            if (m != ignore_index).mean() < min_labelled:
                continue
            images = {
                k: np.ascontiguousarray(r.data[(slice(None), *win)]) for k, r in rasters.items()
            }
            samples.append(
                FolderSample(
                    f"{name}_r{i:02d}_c{j:02d}", _split_of(j, cols, fractions), images, None, m
                )
            )
    sensors = {k: {"bands": list(r.bands), "unit": r.unit} for k, r in rasters.items()}
    return write_folder_task(
        root, name, "segmentation", list(classes.values()), sensors, samples, ignore_index
    )
