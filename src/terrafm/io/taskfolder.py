"""Writing a downstream-task folder, the layout :mod:`terrafm.eval.datasets.folder` reads.

One writer for every producer: :func:`terrafm.eval.datasets.folder.write_folder_task` (tests,
the real-data benchmark, users), :func:`terrafm.eval.datasets.scene.scene_to_folder` and the
built-in world's tasks (:mod:`terrafm.world.tasks`), which stream chips as they are rendered::

    <root>/task.json                  name, task kind, classes, ignore_index, sensors (+ extras)
    <root>/samples.csv                sample_id, split, label
    <root>/<sensor>/<sample_id>.tif   multi-band GeoTIFF, band names as descriptions
    <root>/masks/<sample_id>.tif      segmentation: uint8 class per pixel, ignore_index unlabelled
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from terrafm.errors import DataError
from terrafm.io.geotiff import write_geotiff
from terrafm.outputs import atomic_write

__all__ = ["FolderTaskError", "TaskFolderWriter"]


class FolderTaskError(DataError, ValueError):
    """A task folder that does not follow the layout (names the file and what is wrong)."""


def _label_text(kind: str, label: Any) -> str:
    if kind == "multilabel":
        return ";".join(str(int(c)) for c in label)
    return "" if label is None else str(int(label))


class TaskFolderWriter:
    """Write a task folder sample by sample; :meth:`finish` writes ``samples.csv`` and ``task.json``.

    Args:
        root: the task folder (created).
        name: task name.
        kind: ``classification``, ``multilabel`` or ``segmentation``.
        classes: class names, in label order.
        sensors: sensor key -> ``{"bands": [...], "unit": ...}`` (unit defaults to ``DN``).
        ignore_index: mask value of unlabelled pixels (also the masks' nodata tag).
        nodata: sensor key -> nodata tag of its rasters (default: none).
        extra: more keys for ``task.json`` (after the standard ones).
        atomic: write each file under a temporary name first; a writer that renames the whole
            folder into place when done can pass ``False``.
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        kind: str,
        classes: Sequence[str],
        sensors: Mapping[str, Mapping[str, Any]],
        ignore_index: int = 255,
        *,
        nodata: Mapping[str, float | None] | None = None,
        extra: Mapping[str, Any] | None = None,
        atomic: bool = True,
    ) -> None:
        self.root = Path(root)
        self.kind = kind
        self.ignore_index = ignore_index
        self.nodata = dict(nodata or {})
        self.atomic = atomic
        self.meta: dict[str, Any] = {
            "name": name,
            "task": kind,
            "classes": list(classes),
            "ignore_index": ignore_index,
            "sensors": {
                k: {"bands": list(v["bands"]), "unit": v.get("unit", "DN")}
                for k, v in sensors.items()
            },
            **(extra or {}),
        }
        self.rows: list[tuple[str, str, str]] = []
        masks = ("masks",) if kind == "segmentation" else ()
        for sub in (*self.meta["sensors"], *masks):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        sample_id: str,
        split: str,
        images: Mapping[str, np.ndarray],
        label: Any = None,
        mask: np.ndarray | None = None,
        crs: Any = None,
        transform: Any = None,
    ) -> None:
        """Write one sample: its (C, H, W) raster per sensor, its mask (segmentation), its row.

        Args:
            label: class index, a sequence of class indices (multi-label) or None.
            crs, transform: optional georeference of the sample's rasters.
        """
        if self.kind == "segmentation" and mask is None:
            raise FolderTaskError(f"sample {sample_id}: a segmentation task needs a mask")
        for key, arr in images.items():
            write_geotiff(
                self.root / key / f"{sample_id}.tif",
                arr,
                crs,
                transform,
                self.nodata.get(key),
                self.meta["sensors"][key]["bands"],
                atomic=self.atomic,
            )
        if mask is not None and self.kind == "segmentation":
            write_geotiff(
                self.root / "masks" / f"{sample_id}.tif",
                mask.astype(np.uint8, copy=False),
                crs,
                transform,
                float(self.ignore_index),
                ["class"],
                atomic=self.atomic,
            )
        self.rows.append((sample_id, split, _label_text(self.kind, label)))

    def finish(self) -> Path:
        """Write ``samples.csv`` and ``task.json``; returns the folder."""
        with atomic_write(self.root / "samples.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample_id", "split", "label"])
            w.writerows(self.rows)
        with atomic_write(self.root / "task.json") as tmp:
            tmp.write_text(json.dumps(self.meta, indent=2) + "\n")
        return self.root
