"""Tiny benchmark copies in the exact published layouts (file trees, names, attributes, splits).

Every image is filled so that a test can tell which band went where: band ``j`` of a sample with
label ``c`` holds ``band_value(j, c)`` plus small noise, unless a test passes its own arrays.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

GEOBENCH_S2 = (
    "01 - Coastal aerosol", "02 - Blue", "03 - Green", "04 - Red", "05 - Vegetation Red Edge",
    "06 - Vegetation Red Edge", "07 - Vegetation Red Edge", "08 - NIR", "08A - Vegetation Red Edge",
    "09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR", "12 - SWIR",
)  # fmt: skip
GEOBENCH_S1 = (
    "01 - VH.Real", "02 - VH.Imaginary", "03 - VV.Real", "04 - VV.Imaginary", "05 - VH.LEE Filtered",
    "06 - VV.LEE Filtered", "07 - VH.LEE Filtered.Real", "08 - VV.LEE Filtered.Imaginary",
)  # fmt: skip
S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
EUROSAT_ORDER = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B09",
    "B10",
    "B11",
    "B12",
    "B8A",
)


def band_value(j: int, label: int = 0) -> float:
    """The base value of channel ``j`` of a sample of class ``label`` (DN-like)."""
    return 500.0 + 100.0 * j + 37.0 * label


def stack(
    n_bands: int, size: int, label: int, rng: np.random.Generator, dtype=np.int16
) -> np.ndarray:
    base = np.array([band_value(j, label) for j in range(n_bands)], dtype=np.float32)[:, None, None]
    x = base + rng.normal(0, 2, (n_bands, size, size))
    return x.astype(dtype)


def write_tif(path: Path, data: np.ndarray, names: Sequence[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                   dtype=data.dtype.name, crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4600000))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names or []):
            dst.set_band_description(i + 1, n)


# ---------------------------------------------------------------- GEO-Bench
@contextmanager
def geobench_classes() -> Iterator[types.ModuleType]:
    """A stand-in ``geobench.dataset`` module, importable only inside the block (to pickle with)."""
    mod = types.ModuleType("geobench.dataset")
    calls: list[str] = []

    class BandInfo:
        def __init__(self, name, alt_names=(), spatial_resolution=None):
            self.name, self.alt_names, self.spatial_resolution = name, alt_names, spatial_resolution

        def __setstate__(self, state):  # never reached by the restricted reader
            calls.append("setstate")
            self.__dict__.update(state)

    class SpectralBand(BandInfo):
        def __init__(self, name=None, alt_names=(), spatial_resolution=None, wavelength=None):
            super().__init__(name, alt_names, spatial_resolution)
            self.wavelength = wavelength

    class Sentinel2(SpectralBand):
        pass

    class SegmentationClasses(BandInfo):
        pass

    for cls in (BandInfo, SpectralBand, Sentinel2, SegmentationClasses):
        cls.__module__ = "geobench.dataset"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    mod.calls = calls  # type: ignore[attr-defined]
    parent = types.ModuleType("geobench")
    parent.dataset = mod  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("geobench", "geobench.dataset")}
    sys.modules["geobench"], sys.modules["geobench.dataset"] = parent, mod
    try:
        yield mod
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_geobench_sample(path: Path, bands: dict[str, np.ndarray], label, mod: types.ModuleType,
                          seg_mask: np.ndarray | None = None, date=None) -> None:  # fmt: skip
    """One ``<sample>.hdf5`` as geobench's ``write_sample_hdf5`` lays it out."""
    attr_dict: dict = {}
    order = []
    with h5py.File(path, "w") as fp:
        for name, data in bands.items():
            key = name if date is None else f"{name}_{date}"
            fp.create_dataset(key, data=data)
            attr_dict[key] = {
                "date": None, "date_id": None, "spatial_resolution": 10.0,
                "band_info": mod.Sentinel2(name, (), 10.0, 0.5), "meta_info": None,
                "transform": Affine(10, 0, 500000, 0, -10, 4600000), "crs": CRS.from_epsg(32633),
            }  # fmt: skip
            order.append(key)
        if seg_mask is not None:
            fp.create_dataset("label", data=seg_mask)
            attr_dict["label"] = {"date": None, "band_info": mod.SegmentationClasses("label", 10.0)}
            order.append("label")
        else:
            attr_dict["label"] = label
        attr_dict["bands_order"] = order
        fp.attrs["pickle"] = str(pickle.dumps(attr_dict))


def write_geobench_task(
    root: Path, task: str, band_names: Sequence[str], num_classes: int, size: int = 32,
    counts: tuple[int, int, int] = (8, 4, 4), kind: str = "classification", benchmark: str = "classification_v1.0",
    dtype=np.int16, scale: float = 1.0, seed: int = 0,
) -> Path:  # fmt: skip
    """A GEO-Bench v1 task folder with partitions (``valid``), task_specs.pkl and samples."""
    rng = np.random.default_rng(seed)
    d = root / benchmark / task
    d.mkdir(parents=True, exist_ok=True)
    names = {
        s: [f"id_{s}_{i:04d}" for i in range(n)] for s, n in zip(("train", "valid", "test"), counts)
    }
    with geobench_classes() as mod:
        for ids in names.values():
            for i, sid in enumerate(ids):
                label = i % num_classes
                data = stack(len(band_names), size, label, rng, np.float32) * scale
                bands = {n: data[j].astype(dtype) for j, n in enumerate(band_names)}
                if kind == "segmentation":
                    mask = rng.integers(0, num_classes, (size, size)).astype(np.uint8)
                    write_geobench_sample(d / f"{sid}.hdf5", bands, None, mod, seg_mask=mask)
                elif kind == "multilabel":
                    hot = np.zeros(num_classes, dtype=np.int64)
                    hot[[label, (label + 1) % num_classes]] = 1
                    write_geobench_sample(d / f"{sid}.hdf5", bands, hot, mod)
                else:
                    write_geobench_sample(d / f"{sid}.hdf5", bands, label, mod)
    (d / "default_partition.json").write_text(json.dumps(names))
    few = {"train": names["train"][:2], "valid": names["valid"], "test": names["test"]}
    (d / "0.01x_train_partition.json").write_text(json.dumps(few))
    (d / "1.00x_train_partition.json").write_text(json.dumps(names))
    (d / "band_stats.json").write_text(
        json.dumps({n: {"mean": 1.0, "std": 1.0} for n in band_names})
    )
    (d / "label_map.json").write_text(json.dumps({str(c): [] for c in range(num_classes)}))
    return d


# ---------------------------------------------------------------- Copernicus-Bench
def write_cloud_s2(root: Path, size: int = 32, counts=(4, 2, 2), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cloud_s2"
    for split, n in zip(("train", "val", "test"), counts):
        names = [f"S2B_MSIL1C_{split}{i}__20200315T101029_p{i}" for i in range(n)]
        for i, f in enumerate(names):
            write_tif(d / "s2_toa" / f"{f}.tif", stack(13, size, i % 4, rng, np.uint16))
            write_tif(
                d / "cloud" / f"{f}.tif", rng.integers(0, 4, (1, size, size)).astype(np.uint8)
            )
        (d / f"{split}.csv").write_text("\n".join(names) + "\n")
    return d


def write_eurosat_cob(
    root: Path, sensor: str, size: int = 32, per_split=(2, 1, 1), seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    d = root / f"eurosat_{sensor}"
    classes = ["AnnualCrop", "Forest", "River"]
    n = 0
    for split, k in zip(("train", "val", "test"), per_split):
        lines = []
        for ci, c in enumerate(classes):
            for _ in range(k):
                n += 1
                data = (rng.normal(-12 - 3 * ci, 1, (2, size, size)).astype(np.float32) if sensor == "s1"
                        else stack(13, size, ci, rng, np.uint16))  # fmt: skip
                write_tif(d / "all_imgs" / c / f"{c}_{n}.tif", data)
                lines.append(f"{c}_{n}.jpg")
        (d / f"eurosat-{split}.txt").write_text("\n".join(lines) + "\n")
    return d


BEN_CLASSES = [f"class {i}" for i in range(19)]


def write_bigearthnet(root: Path, size: int = 32, counts=(6, 2, 2), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "bigearthnet_s1s2"
    for split, n in zip(("train", "val", "test"), counts):
        rows = ["s1_path,s2_path," + ",".join(BEN_CLASSES)]
        for i in range(n):
            s1 = f"S1A_IW_GRDH_1SDV_20170613T1650{i:02d}_33UUP_{split}_{i}.tif"
            s2 = f"S2A_MSIL2A_20170613T1010{i:02d}_{split}_{i}.tif"
            write_tif(
                d / "BigEarthNet-S1-5%" / s1, rng.normal(-15, 2, (2, size, size)).astype(np.float32)
            )
            write_tif(d / "BigEarthNet-S2-5%" / s2, stack(12, size, i % 3, rng, np.uint16))
            hot = ["1" if c in (i % 19, (i + 5) % 19) else "0" for c in range(19)]
            rows.append(f"{s1},{s2}," + ",".join(hot))
        (d / f"multilabel-{split}.csv").write_text("\n".join(rows) + "\n")
    return d


def write_dfc2020(root: Path, size: int = 32, counts=(4, 2, 2), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "dfc2020_s1s2"
    for split, n in zip(("train", "val", "test"), counts):
        names = []
        for i in range(n):
            f = f"ROIs0000_{split}_dfc_{i}_p{i}.tif"
            names.append(f)
            write_tif(d / "dfc" / f, rng.integers(0, 11, (1, size, size)).astype(np.uint16))
            write_tif(
                d / "s1" / f.replace("dfc", "s1"),
                rng.normal(-14, 3, (2, size, size)).astype(np.float32),
            )
            write_tif(d / "s2" / f.replace("dfc", "s2"), stack(13, size, i, rng, np.uint16))
        (d / f"dfc-{split}-new.csv").write_text("\n".join(names) + "\n")
    return d


def write_lcz(root: Path, counts=(6, 3, 3), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "lcz_s1s2"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "val", "test"), counts):
        labels = np.arange(n) % 17
        sen2 = np.stack(
            [np.moveaxis(stack(10, 32, int(c), rng, np.float32), 0, -1) / 10000.0 for c in labels]
        )
        with h5py.File(d / f"lcz_{split}.h5", "w") as f:
            f.create_dataset("sen1", data=np.zeros((n, 32, 32, 8), np.float32))
            f.create_dataset("sen2", data=sen2.astype(np.float64))
            f.create_dataset("label", data=np.eye(17)[labels])
    return d


# ---------------------------------------------------------------- Landslide4Sense
def write_landslide4sense(
    root: Path, layout: str = "competition", size: int = 32, counts=(4, 2, 2), seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    dirs = {
        "competition": {"train": ("TrainData/img", "TrainData/mask"), "val": ("ValidData/img", "ValidData/mask"),
                        "test": ("TestData/img", "TestData/mask")},
        "hf": {"train": ("images/train", "annotations/train"), "val": ("images/validation", "annotations/validation"),
               "test": ("images/test", "annotations/test")},
    }[layout]  # fmt: skip
    n0 = 1
    for split, n in zip(("train", "val", "test"), counts):
        img_dir, mask_dir = (root / p for p in dirs[split])
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n0, n0 + n):
            img = rng.normal(0.5, 0.3, (size, size, 14)).astype(np.float64)
            mask = (rng.random((size, size)) > 0.8).astype(np.uint8)
            with h5py.File(img_dir / f"image_{i}.h5", "w") as f:
                f.create_dataset("img", data=img)
            with h5py.File(mask_dir / f"mask_{i}.h5", "w") as f:
                f.create_dataset("mask", data=mask)
        n0 += n
    return root


# ---------------------------------------------------------------- EuroSAT-MS
def write_eurosat_ms(root: Path, classes: Sequence[str] = ("AnnualCrop", "Forest", "SeaLake"), per_class: int = 6,
                     size: int = 64, seed: int = 0) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        for n in range(1, per_class + 1):
            write_tif(root / c / f"{c}_{n}.tif", stack(13, size, ci, rng, np.uint16))
    return root
