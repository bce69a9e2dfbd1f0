"""The generic downstream-task folder (contract C): GeoTIFFs plus a CSV of labels or mask rasters.

Layout::

    <root>/task.json     {"name", "task": classification|multilabel|segmentation, "classes": [...],
                          "ignore_index": 255, "sensors": {sensor: {"bands": [...], "unit": ...}}}
    <root>/samples.csv   sample_id, split (train|val|test), label (class index; multi-label:
                          ';'-joined indices; segmentation: empty)
    <root>/<sensor>/<sample_id>.tif   multi-band GeoTIFF, bands in the declared order
    <root>/masks/<sample_id>.tif      segmentation: uint8 class per pixel, ignore_index unlabelled

Sensors are the stem keys (``s1``, ``s2_l1c``, ``s2_l2a``); units are ``DN``/``reflectance`` for S2
and ``dB``/``linear`` for S1. Band descriptions stored in a GeoTIFF, when present, must agree with
the declared names (a file whose bands were written in another order is an error, not a silent
mix-up). :func:`write_folder_task` writes this layout through :class:`terrafm.io.taskfolder.TaskFolderWriter`
(tests, the real-data benchmark, users).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from terrafm.eval.tasks import (
    KINDS,
    EvalTask,
    RawSample,
    SampleError,
    SampleRef,
    SensorSpec,
    round_to_patch,
)
from terrafm.io.geotiff import read_raster
from terrafm.io.taskfolder import FolderTaskError, TaskFolderWriter
from terrafm.sensors import canonical_band_name

__all__ = ["FolderSample", "load_folder_task", "read_geotiff", "write_folder_task"]

SPLITS = ("train", "val", "test")


def read_geotiff(path: Path, bands: Sequence[str] | None = None) -> np.ndarray:
    """All bands of a GeoTIFF as (C, H, W); checks stored band names against ``bands``."""
    if not path.is_file():
        raise SampleError(f"{path}: file not found")
    raster = read_raster(str(path))  # tasks need no georeference
    data, desc = raster.data, raster.descriptions
    if bands is not None:
        if data.shape[0] != len(bands):
            raise SampleError(
                f"{path}: {data.shape[0]} bands in the file but {len(bands)} declared {list(bands)}"
            )
        stored = [canonical_band_name(d) if d else None for d in desc]
        declared = [canonical_band_name(b) for b in bands]
        clash = [(i, s, d) for i, (s, d) in enumerate(zip(stored, declared)) if s and s != d]
        if clash:
            raise SampleError(
                f"{path}: band descriptions {list(desc)} disagree with the declared bands "
                f"{list(bands)} (first clash at band {clash[0][0] + 1}: {clash[0][1]} vs {clash[0][2]})"
            )
    return data


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FolderTaskError(f"{path}: task description not found (a task folder needs task.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FolderTaskError(f"{path}: not valid JSON ({e})") from e
    for key in ("task", "classes", "sensors"):
        if key not in meta:
            raise FolderTaskError(f"{path}: missing key {key!r}")
    if meta["task"] not in KINDS:
        raise FolderTaskError(f"{path}: 'task' must be one of {KINDS}, got {meta['task']!r}")
    if not isinstance(meta["sensors"], dict) or not meta["sensors"]:
        raise FolderTaskError(f"{path}: 'sensors' must map sensor keys to band lists")
    return meta


def _parse_label(text: str, kind: str, k: int, where: str) -> Any:
    text = (text or "").strip()
    if kind == "segmentation":
        return None
    try:
        idx = [int(t) for t in text.split(";") if t.strip()]
    except ValueError:
        raise FolderTaskError(f"{where}: label {text!r} is not a class index") from None
    if kind == "classification" and len(idx) != 1:
        raise FolderTaskError(f"{where}: a classification label is one class index, got {text!r}")
    bad = [c for c in idx if not 0 <= c < k]
    if bad:
        raise FolderTaskError(f"{where}: class index {bad[0]} out of range 0..{k - 1}")
    return idx[0] if kind == "classification" else tuple(idx)


def _read_samples(path: Path, kind: str, k: int) -> dict[str, list[SampleRef]]:
    if not path.is_file():
        raise FolderTaskError(f"{path}: sample list not found")
    splits: dict[str, list[SampleRef]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"sample_id", "split", "label"} - set(reader.fieldnames or [])
        if missing:
            raise FolderTaskError(f"{path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            sid, split = row["sample_id"].strip(), row["split"].strip()
            where = f"{path}:{line} (sample {sid})"
            if split == "valid":
                split = "val"
            if split not in splits:
                raise FolderTaskError(f"{where}: split {split!r} is not one of {SPLITS}")
            if sid in seen:
                raise FolderTaskError(f"{where}: duplicate sample_id")
            seen.add(sid)
            splits[split].append(SampleRef(sid, sid, _parse_label(row["label"], kind, k, where)))
    return {s: refs for s, refs in splits.items() if refs}


def load_folder_task(root: str | Path, image_size: int | None = None) -> EvalTask:
    """Read a task folder (layout in the module docstring)."""
    root = Path(root)
    meta = _read_json(root / "task.json")
    kind, classes = meta["task"], [str(c) for c in meta["classes"]]
    specs = {
        key: SensorSpec(tuple(spec["bands"]), str(spec.get("unit", "dB" if key == "s1" else "DN")))
        for key, spec in meta["sensors"].items()
    }
    splits = _read_samples(root / "samples.csv", kind, len(classes))

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        wanted = sensors if sensors is not None else list(specs)
        files = {s: root / s / f"{ref.key}.tif" for s in wanted}
        # A sample may lack a sensor's file (the dataset fuses what it has, or says which is
        # missing); one without any is unreadable.
        have = {s: f for s, f in files.items() if f.is_file()} or files
        images = {s: read_geotiff(f, specs[s].bands) for s, f in have.items()}
        mask = None
        if kind == "segmentation":
            mask = read_geotiff(root / "masks" / f"{ref.key}.tif")[0]
        return RawSample(images, None, mask)

    if image_size is None:  # every sample is resized to the first one's size, rounded to 16
        first = next(r for refs in splits.values() for r in refs)
        key = next(iter(specs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(root / key / f"{first.key}.tif") as src:
                image_size = round_to_patch(max(src.height, src.width))
    return EvalTask(
        benchmark="folder",
        name=str(meta.get("name", root.name)),
        kind=kind,
        classes=classes,
        sensors=specs,
        splits=splits,
        load=load,
        root=root,
        image_size=image_size,
        ignore_index=int(meta.get("ignore_index", 255)),
    )


@dataclass
class FolderSample:
    """One sample to write: raw arrays per sensor (C, H, W), and its target."""

    id: str
    split: str
    images: dict[str, np.ndarray]
    label: Any = None  # class index | sequence of class indices | None
    mask: np.ndarray | None = None
    transform: Any = None  # optional rasterio Affine
    crs: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_folder_task(
    root: str | Path,
    name: str,
    kind: str,
    classes: Sequence[str],
    sensors: Mapping[str, Mapping[str, Any]],
    samples: Sequence[FolderSample],
    ignore_index: int = 255,
) -> Path:
    """Write a task folder; ``sensors`` maps sensor key -> {"bands": [...], "unit": ...}."""
    writer = TaskFolderWriter(root, name, kind, classes, sensors, ignore_index)
    for s in samples:
        writer.add(s.id, s.split, s.images, s.label, s.mask, s.crs, s.transform)
    return writer.finish()
