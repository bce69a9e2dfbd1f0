"""Landslide4Sense (docs/design.md, "Evaluation protocols / Landslide4Sense"): 128 x 128 HDF5 patches with 14 layers and binary masks.

Two layouts are read:

- the competition release: ``TrainData/img/image_<n>.h5`` + ``TrainData/mask/mask_<n>.h5``, and
  ``ValidData/`` and ``TestData/`` alike (train / val / test);
- the Hugging Face release: ``images/{train,validation,test}/image_<n>.h5`` +
  ``annotations/{train,validation,test}/mask_<n>.h5``.

Image files hold a dataset ``img`` (128, 128, 14): Sentinel-2 B1..B12 (with B10, without B8A), then
ALOS PALSAR slope and DEM; mask files hold ``mask`` (128, 128), 1 = landslide (any non-zero value is
read as landslide). The protocol is unpublished; the choice here (docs/design.md, "Evaluation protocols / Landslide4Sense") feeds the 12 S2 bands
through the L1C stem (B10 dropped, B8A imputed from B08, slope/DEM ignored). The released values are
rescaled from reflectance by an undocumented factor, so the unit is ``scaled`` and the default
normalisation is ``dataset`` (per-band statistics of the training split).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from terrafm.eval.tasks import EvalTask, RawSample, SampleError, SampleRef, SensorSpec

__all__ = ["L4S_BANDS", "load_landslide4sense"]

L4S_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "SLOPE", "DEM",
)  # fmt: skip
_LAYOUTS = (
    {"train": ("TrainData/img", "TrainData/mask"), "val": ("ValidData/img", "ValidData/mask"),
     "test": ("TestData/img", "TestData/mask")},
    {"train": ("images/train", "annotations/train"), "val": ("images/validation", "annotations/validation"),
     "test": ("images/test", "annotations/test")},
)  # fmt: skip


def _number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else -1


def _splits(root: Path) -> dict[str, list[SampleRef]]:
    for layout in _LAYOUTS:
        if not (root / layout["train"][0]).is_dir():
            continue
        splits: dict[str, list[SampleRef]] = {}
        for split, (img_dir, mask_dir) in layout.items():
            images = sorted((root / img_dir).glob("image_*.h5"), key=_number)
            refs = []
            for img in images:
                mask = root / mask_dir / f"mask_{_number(img)}.h5"
                refs.append(SampleRef(f"{split}/{img.stem}", (str(img), str(mask))))
            if refs:
                splits[split] = refs
        return splits
    raise FileNotFoundError(
        f"{root}: no Landslide4Sense data (expected TrainData/img/ or images/train/)"
    )


def _read(path: str, key: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"{p}: file not found")
    with h5py.File(p, "r") as f:
        if key not in f:
            raise SampleError(f"{p}: dataset {key!r} missing (has {list(f.keys())})")
        return np.asarray(f[key])


def load_landslide4sense(data_root: str | Path, *, image_size: int | None = 128) -> EvalTask:
    """The Landslide4Sense segmentation task (2 classes: non-landslide, landslide)."""
    root = Path(data_root)

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        img_path, mask_path = ref.key
        img = _read(img_path, "img")
        if img.ndim != 3 or img.shape[-1] != len(L4S_BANDS):
            raise SampleError(f"{img_path}: 'img' has shape {img.shape}, expected (H, W, 14)")
        mask = _read(mask_path, "mask")
        if mask.shape != img.shape[:2]:
            raise SampleError(f"{mask_path}: mask shape {mask.shape} != image {img.shape[:2]}")
        return RawSample({"s2_l1c": np.moveaxis(img, -1, 0)}, None, (mask > 0).astype(np.int64))

    return EvalTask(
        benchmark="landslide4sense",
        name="landslide4sense",
        kind="segmentation",
        classes=["non-landslide", "landslide"],
        sensors={"s2_l1c": SensorSpec(L4S_BANDS, "scaled")},
        splits=_splits(root),
        load=load,
        root=root,
        image_size=image_size,
        normalization="dataset",
        notes=[
            "S2 bands through the L1C stem (B8A <- B08); slope and DEM unused; per-band "
            "statistics of the training split (unit undocumented)"
        ],
    )
