"""GEO-Bench v1 (``classification_v1.0`` / ``segmentation_v1.0``) HDF5 tasks (docs/design.md, "Evaluation protocols / GEO-Bench v1").

Layout: ``<root>/<benchmark>/<task>/`` with one ``<sample>.hdf5`` per sample, ``*_partition.json``
files (``default``, ``0.01x_train`` ... ``1.00x_train``; keys ``train``/``valid``/``test``), and
``task_specs.pkl``, ``band_stats.json``, ``label_map.json``. Each HDF5 file holds one dataset per band,
named like ``"02 - Blue"`` or ``"08A - Vegetation Red Edge"`` (a ``_<date>`` suffix for dated
bands), a ``label`` dataset for segmentation masks, and a root attribute ``pickle``: the string form
of a bytes literal holding ``bands_order`` and, for classification, ``label``.

Safety: the ``pickle`` attribute is read with :mod:`terrafm.eval.datasets.pickle_safe` (plain data,
numpy arrays and inert records of GEO-Bench's own metadata classes; anything else is refused with
the file named, nothing executed). ``task_specs.pkl`` is not needed and never opened: class counts,
sensors and sizes come from :data:`GEOBENCH_TASKS`.

Errata (geo-bench issues #28, #29), applied by name:

- m-eurosat stores B01..B12 with B8A last under names that put B8A 9th.
- m-brick-kiln stores B01-B05, B07, B8A, B08, B11, B12 and 8-bit true-colour R, G, B under the
  13 standard names; the RGB channels are ignored and B06, B09 imputed (nearest wavelength).

Bands absent from a task (B01/B09 in m-so2sat) are imputed as :mod:`terrafm.eval.bands` documents;
m-so2sat's S2 reflectance is multiplied by 10000 and its 8 complex S1 channels are not used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from terrafm.eval.datasets.eurosat import EUROSAT_CLASSES
from terrafm.eval.datasets.pickle_safe import bytes_literal, safe_loads
from terrafm.eval.tasks import EvalTask, RawSample, SampleError, SampleRef, SensorSpec

__all__ = ["GEOBENCH_S2_NAMES", "GEOBENCH_TASKS", "GeoBenchTaskInfo", "load_geobench"]

log = logging.getLogger(__name__)

# GEO-Bench's names for the 13 Sentinel-2 bands.
GEOBENCH_S2_NAMES = {
    "01 - Coastal aerosol": "B01",
    "02 - Blue": "B02",
    "03 - Green": "B03",
    "04 - Red": "B04",
    "05 - Vegetation Red Edge": "B05",
    "06 - Vegetation Red Edge": "B06",
    "07 - Vegetation Red Edge": "B07",
    "08 - NIR": "B08",
    "08A - Vegetation Red Edge": "B8A",
    "09 - Water vapour": "B09",
    "10 - SWIR - Cirrus": "B10",
    "11 - SWIR": "B11",
    "12 - SWIR": "B12",
}
# What the mislabelled channels really hold (geo-bench issues #28 and #29).
_ERRATA = {
    "m-eurosat": {
        "08A - Vegetation Red Edge": "B09",
        "09 - Water vapour": "B10",
        "10 - SWIR - Cirrus": "B11",
        "11 - SWIR": "B12",
        "12 - SWIR": "B8A",
    },
    "m-brick-kiln": {
        "06 - Vegetation Red Edge": "B07",
        "07 - Vegetation Red Edge": "B8A",
        "08A - Vegetation Red Edge": "B11",
        "09 - Water vapour": "B12",
        "10 - SWIR - Cirrus": "TCI_R",
        "11 - SWIR": "TCI_G",
        "12 - SWIR": "TCI_B",
    },
}


@dataclass(frozen=True)
class GeoBenchTaskInfo:
    """What the protocol needs to know about a published GEO-Bench task."""

    benchmark: str
    kind: str
    num_classes: int
    sensor: str
    image_size: int  # protocol input, multiple of 16 (native 120 px BigEarthNet -> 128, choice)
    unit: str = "DN"
    classes: tuple[str, ...] = ()


GEOBENCH_TASKS = {
    "m-eurosat": GeoBenchTaskInfo("classification_v1.0", "classification", 10, "s2_l1c", 64,
                                  classes=EUROSAT_CLASSES),
    "m-bigearthnet": GeoBenchTaskInfo("classification_v1.0", "multilabel", 43, "s2_l2a", 128),
    "m-so2sat": GeoBenchTaskInfo("classification_v1.0", "classification", 17, "s2_l1c", 32,
                                 unit="reflectance"),
    "m-brick-kiln": GeoBenchTaskInfo("classification_v1.0", "classification", 2, "s2_l1c", 64,
                                     classes=("not brick kiln", "brick kiln")),
    "m-cashew-plant": GeoBenchTaskInfo("segmentation_v1.0", "segmentation", 7, "s2_l2a", 256),
    "m-sa-crop-type": GeoBenchTaskInfo("segmentation_v1.0", "segmentation", 10, "s2_l2a", 256),
}  # fmt: skip


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _find_task_dir(root: Path, name: str) -> Path:
    info = GEOBENCH_TASKS[name]
    for base in (root / info.benchmark, root, root.parent):
        if base.is_dir():
            for d in base.iterdir():
                if d.is_dir() and _norm(d.name) == name:
                    return d
    if _norm(root.name) == name and root.is_dir():
        return root
    raise FileNotFoundError(
        f"{root}: GEO-Bench task folder {name!r} not found (looked in {root / info.benchmark})"
    )


def _read_partitions(task_dir: Path) -> dict[str, dict[str, list[str]]]:
    parts: dict[str, dict[str, list[str]]] = {}
    for p in sorted(task_dir.glob("*_partition.json")):
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SampleError(f"{p}: not valid JSON ({e})") from e
        if not isinstance(raw, dict) or not {"train", "valid", "test"} <= set(raw):
            raise SampleError(f"{p}: a partition needs 'train', 'valid' and 'test' lists")
        parts[p.name[: -len("_partition.json")]] = {
            "train": list(raw["train"]), "val": list(raw["valid"]), "test": list(raw["test"]),
        }  # fmt: skip
    if "default" not in parts:
        raise FileNotFoundError(f"{task_dir}: default_partition.json not found")
    return parts


def read_sample_attrs(path: Path) -> dict[str, Any]:
    """The decoded ``pickle`` attribute of a GEO-Bench HDF5 sample (restricted unpickler)."""
    with h5py.File(path, "r") as f:
        if "pickle" not in f.attrs:
            return {}
        raw = f.attrs["pickle"]
    attrs = safe_loads(bytes_literal(raw, path), path, metadata=True)
    if not isinstance(attrs, dict):
        raise SampleError(f"{path}: pickle attribute holds a {type(attrs).__name__}, not a dict")
    return attrs


def _band_key_name(key: str) -> str:
    """Dataset key -> GEO-Bench band name (drops a ``_<date>`` suffix)."""
    if key in GEOBENCH_S2_NAMES:
        return key
    head = key.rsplit("_", 1)[0]
    return head if head in GEOBENCH_S2_NAMES else key


def _band_layout(path: Path, task: str) -> tuple[list[str], list[str]]:
    """(dataset keys to read, canonical band names) from the first sample's ``bands_order``."""
    attrs = read_sample_attrs(path)
    with h5py.File(path, "r") as f:
        order = attrs.get("bands_order") or sorted(f.keys())
    keys, names, seen = [], [], set()
    errata = _ERRATA.get(task, {})
    for key in order:
        if key == "label" or not isinstance(key, str):
            continue
        gb = _band_key_name(key)
        # Non-S2 channels (So2Sat's "01 - VH.Real", cloud probability) keep a prefixed name so
        # their leading number is never read as an S2 band number.
        name = errata.get(gb, GEOBENCH_S2_NAMES.get(gb, f"geobench:{gb}"))
        if name in seen:  # later dates of a time series: the first date is used
            continue
        seen.add(name)
        keys.append(key)
        names.append(name)
    return keys, names


def _first_layout(
    paths: list[Path], task: str, tries: int = 5
) -> tuple[Path, list[str], list[str]]:
    """The band layout of the first readable sample (a bad file is logged, not fatal here)."""
    if not paths:
        raise FileNotFoundError(f"GEO-Bench task {task}: the default partition lists no samples")
    errors = []
    for path in paths[:tries]:
        try:
            return (path, *_band_layout(path, task))
        except Exception as e:
            log.warning("GEO-Bench %s: cannot read the band layout of %s: %s", task, path, e)
            errors.append(e)
    raise errors[0]


def _stack(path: Path, f: h5py.File, keys: list[str]) -> np.ndarray:
    arrays = []
    for k in keys:
        if k not in f:
            raise SampleError(f"{path}: band dataset {k!r} missing")
        arrays.append(np.asarray(f[k], dtype=np.float32))
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    out = np.empty((len(arrays), h, w), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a.shape != (h, w):  # a band stored at its native, coarser resolution
            a = F.interpolate(torch.from_numpy(a)[None, None], size=(h, w), mode="bilinear")[
                0, 0
            ].numpy()
        out[i] = a
    return out


def _label(path: Path, attrs: dict[str, Any], info: GeoBenchTaskInfo) -> Any:
    if "label" not in attrs:
        raise SampleError(f"{path}: no 'label' in the pickle attribute")
    label = attrs["label"]
    if info.kind == "classification":
        return int(np.asarray(label).reshape(-1)[0])
    arr = np.asarray(label)
    if arr.shape == (info.num_classes,) and set(np.unique(arr).tolist()) <= {0, 1}:
        return arr.astype(np.float32)  # multi-hot
    return tuple(int(c) for c in arr.reshape(-1))


def load_geobench(name: str, data_root: str | Path, *, image_size: int | None = None) -> EvalTask:
    """A GEO-Bench v1 task.

    Args:
        name: ``m-eurosat``, ``m-bigearthnet``, ``m-so2sat``, ``m-brick-kiln``, ``m-cashew-plant``
            or ``m-SA-crop-type`` (case and ``_``/``-`` do not matter).
        data_root: the folder holding ``classification_v1.0/`` and ``segmentation_v1.0/``.
        image_size: override of the protocol size.
    """
    key = _norm(name)
    if key not in GEOBENCH_TASKS:
        raise ValueError(f"unknown GEO-Bench task {name!r}; available: {sorted(GEOBENCH_TASKS)}")
    info = GEOBENCH_TASKS[key]
    task_dir = _find_task_dir(Path(data_root), key)
    parts = _read_partitions(task_dir)
    splits = {
        s: [SampleRef(n, str(task_dir / f"{n}.hdf5")) for n in ids]
        for s, ids in parts["default"].items()
    }
    first, keys, names = _first_layout([Path(r.key) for refs in splits.values() for r in refs], key)

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        path = Path(ref.key)
        if not path.is_file():
            raise SampleError(f"{path}: sample file not found")
        attrs = read_sample_attrs(path)
        with h5py.File(path, "r") as f:
            image = _stack(path, f, keys)
            mask = np.asarray(f["label"]) if info.kind == "segmentation" and "label" in f else None
        if info.kind == "segmentation":
            if mask is None:
                raise SampleError(f"{path}: segmentation sample without a 'label' dataset")
            return RawSample({info.sensor: image}, None, mask)
        return RawSample({info.sensor: image}, _label(path, attrs, info))

    classes = list(info.classes) or [f"class_{i}" for i in range(info.num_classes)]
    notes = [f"bands read by name from {first.name}'s bands_order"]
    if key in _ERRATA:
        notes.append(f"band-name errata of {key} applied (geo-bench issues #28/#29)")
    return EvalTask(
        benchmark="geobench",
        name=key,
        kind=info.kind,  # type: ignore[arg-type]
        classes=classes,
        sensors={info.sensor: SensorSpec(tuple(names), info.unit)},
        splits=splits,
        load=load,
        root=task_dir,
        image_size=image_size or info.image_size,
        partitions=parts,
        notes=notes,
    )
