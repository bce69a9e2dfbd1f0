"""Copernicus-Bench Sentinel-1/2 tasks as distributed (docs/design.md, "Evaluation protocols / Copernicus-Bench").

``--data-root`` is the folder holding the task folders (or one task folder itself); each task is
found by its marker file, also one level down (the Hugging Face release nests them as
``l1_cloud_s2/cloud_s2`` ...):

========================  ==================================================================
task                      layout
========================  ==================================================================
``cloud_s2``              ``s2_toa/<f>.tif`` (13 bands, L1C), ``cloud/<f>.tif`` (0 clear, 1 thick,
                          2 thin, 3 shadow); ``train.csv``/``val.csv``/``test.csv`` list ``<f>``
``eurosat_s1``/``_s2``    ``all_imgs/<Class>/<Class>_<n>.tif``; ``eurosat-{train,val,test}.txt``
                          list ``.jpg`` names (read as ``.tif``); classes = sorted folder names;
                          S1 VV, VH in dB; S2 13 bands with B8A last
``bigearthnet_s1s2``      ``multilabel-{train,val,test}.csv``: ``s1_path, s2_path`` + 19 class
                          columns; images under ``BigEarthNet-S1-5%/`` and ``BigEarthNet-S2-5%/``;
                          S2 L2A 12 bands (no B10); S1 VV, VH in dB
``dfc2020_s1s2``          ``s1/``, ``s2/``, ``dfc/`` tifs; ``dfc-{train,val,test}-new.csv`` list
                          label files (``dfc`` in the name replaced by ``s1``/``s2`` for images);
                          labels 0..10 mapped {0,3,8}->255 (ignored), 1->0, 2->1, 4->2, 5->3,
                          6->4, 7->5, 9->6, 10->7 (8 classes); S2 13 bands L1C
``lcz``                   ``lcz_{train,val,test}.h5``: ``sen2`` N x 32 x 32 x 10 reflectance
                          (B02..B08, B8A, B11, B12; x 1e4 to DN; B01, B09 imputed) and
                          ``label`` one-hot N x 17
========================  ==================================================================

The two-sensor tasks take ``bigearthnet_s1`` / ``bigearthnet_s2`` / ``dfc2020_s1`` /
``dfc2020_s2`` as names for their single-sensor rows; all can be evaluated fused.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np

from terrafm.eval.datasets.folder import read_geotiff
from terrafm.eval.tasks import EvalTask, RawSample, SampleError, SampleRef, SensorSpec
from terrafm.sensors import Stats

__all__ = ["COPERNICUS_STATS", "COPERNICUS_TASKS", "load_copernicus"]

S2_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S2_13_B8A_LAST = (*S2_13[:8], "B09", "B10", "B11", "B12", "B8A")
S2_12 = tuple(b for b in S2_13 if b != "B10")
S1 = ("VV", "VH")
SPLITS = ("train", "val", "test")
# Copernicus-Bench z-score statistics (docs/design.md, "Evaluation protocols / Copernicus-Bench"), in stem order; the S2 B10 entry is dropped.
_S2_MEAN = (
    1353.7,
    1117.2,
    1041.8,
    946.5,
    1199.1,
    2003.0,
    2374.0,
    2301.2,
    2599.7,
    732.1,
    1820.6,
    1118.2,
)
_S2_STD = (897.3, 736.0, 684.8, 620.0, 791.9, 1341.3, 1595.4, 1545.5, 1750.1, 475.1, 1216.5, 736.7)
COPERNICUS_STATS = {
    "s1": Stats((-12.548, -20.192), (5.257, 5.912), "Copernicus-Bench S1 (dB)"),
    "s2_l1c": Stats(_S2_MEAN, _S2_STD, "Copernicus-Bench S2"),
    "s2_l2a": Stats(_S2_MEAN, _S2_STD, "Copernicus-Bench S2"),
}
# LCZ's own reflectance statistics x 1e4, stem order; imputed B01/B09 copy B02/B8A.
_LCZ_MEAN = (
    1120.0,
    1120.0,
    1040.0,
    950.0,
    1200.0,
    2000.0,
    2370.0,
    2300.0,
    2600.0,
    2600.0,
    1820.0,
    1120.0,
)
_LCZ_STD = (
    740.0,
    740.0,
    680.0,
    620.0,
    790.0,
    1340.0,
    1600.0,
    1550.0,
    1750.0,
    1750.0,
    1220.0,
    740.0,
)
EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
    "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
DFC_CLASSES = (
    "Forest",
    "Shrubland",
    "Grassland",
    "Wetland",
    "Cropland",
    "Urban/Built-up",
    "Barren",
    "Water",
)
DFC_MAPPING = {0: 255, 1: 0, 2: 1, 3: 255, 4: 2, 5: 3, 6: 4, 7: 5, 8: 255, 9: 6, 10: 7}
CLOUD_CLASSES = ("clear", "thick cloud", "thin cloud", "cloud shadow")
LCZ_CLASSES = (
    "Compact high rise", "Compact mid rise", "Compact low rise", "Open high rise",
    "Open mid rise", "Open low rise", "Lightweight low rise", "Large low rise", "Sparsely built",
    "Heavy industry", "Dense trees", "Scattered trees", "Bush, scrub", "Low plants",
    "Bare rock or paved", "Bare soil or sand", "Water",
)  # fmt: skip

# task -> (folder names, marker file, builder name, default sensors)
COPERNICUS_TASKS: dict[str, tuple[tuple[str, ...], str, str, tuple[str, ...]]] = {
    "cloud_s2": (("cloud_s2",), "train.csv", "cloud", ("s2_l1c",)),
    "eurosat_s1": (("eurosat_s1",), "eurosat-train.txt", "eurosat_s1", ("s1",)),
    "eurosat_s2": (("eurosat_s2",), "eurosat-train.txt", "eurosat_s2", ("s2_l1c",)),
    "bigearthnet_s1s2": (
        ("bigearthnet_s1s2", "bigearthnetv2", "bigearthnet"),
        "multilabel-train.csv",
        "ben",
        ("s1", "s2_l2a"),
    ),
    "bigearthnet_s1": (
        ("bigearthnet_s1s2", "bigearthnetv2", "bigearthnet"),
        "multilabel-train.csv",
        "ben",
        ("s1",),
    ),
    "bigearthnet_s2": (
        ("bigearthnet_s1s2", "bigearthnetv2", "bigearthnet"),
        "multilabel-train.csv",
        "ben",
        ("s2_l2a",),
    ),
    "dfc2020_s1s2": (("dfc2020_s1s2", "dfc2020"), "dfc-train-new.csv", "dfc", ("s1", "s2_l1c")),
    "dfc2020_s1": (("dfc2020_s1s2", "dfc2020"), "dfc-train-new.csv", "dfc", ("s1",)),
    "dfc2020_s2": (("dfc2020_s1s2", "dfc2020"), "dfc-train-new.csv", "dfc", ("s2_l1c",)),
    "lcz_s2": (("lcz_s1s2", "lcz_s2", "lcz"), "lcz_train.h5", "lcz", ("s2_l1c",)),
}
_ALIASES = {"lcz": "lcz_s2", "bigearthnet": "bigearthnet_s1s2", "dfc2020": "dfc2020_s1s2"}
# Protocol input sizes (docs/design.md, "Evaluation protocols / Copernicus-Bench").
_SIZES = {"cloud": 512, "dfc": 256, "lcz": 112}


def _find_dir(root: Path, names: tuple[str, ...], marker: str) -> Path:
    cands = [root] + [root / n for n in names]
    if root.is_dir():
        cands += [d / n for d in sorted(root.iterdir()) if d.is_dir() for n in names]
    for c in cands:
        if (c / marker).is_file():
            return c
    raise FileNotFoundError(
        f"{root}: Copernicus-Bench folder {names[0]!r} not found (looked for {marker} in {root}, "
        f"{root}/{names[0]} and one level down)"
    )


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _cloud(d: Path) -> tuple[dict, Callable[[SampleRef], RawSample], dict, str, list[str]]:
    splits = {s: [SampleRef(f, f) for f in _lines(d / f"{s}.csv")] for s in SPLITS}

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        img = read_geotiff(d / "s2_toa" / f"{ref.key}.tif")
        mask = read_geotiff(d / "cloud" / f"{ref.key}.tif")[0]
        return RawSample({"s2_l1c": img}, None, mask)

    return splits, load, {"s2_l1c": SensorSpec(S2_13, "DN")}, "segmentation", list(CLOUD_CLASSES)


def _eurosat(
    d: Path, sensor: str
) -> tuple[dict, Callable[[SampleRef], RawSample], dict, str, list[str]]:
    base = d / "all_imgs"
    classes = (
        sorted(p.name for p in base.iterdir() if p.is_dir())
        if base.is_dir()
        else list(EUROSAT_CLASSES)
    )
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[SampleRef]] = {}
    for s in SPLITS:
        refs = []
        for name in _lines(d / f"eurosat-{s}.txt"):
            stem = Path(name).stem
            cls = stem.split("_")[0]
            if cls not in index:
                raise SampleError(f"{d / f'eurosat-{s}.txt'}: {name}: unknown class {cls!r}")
            refs.append(SampleRef(stem, str(base / cls / f"{stem}.tif"), index[cls]))
        splits[s] = refs
    bands = S1 if sensor == "s1" else S2_13_B8A_LAST

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        return RawSample({sensor: read_geotiff(Path(ref.key))}, ref.label)

    unit = "dB" if sensor == "s1" else "DN"
    return splits, load, {sensor: SensorSpec(bands, unit)}, "classification", classes


def _ben(d: Path) -> tuple[dict, Callable[[SampleRef], RawSample], dict, str, list[str]]:
    splits: dict[str, list[SampleRef]] = {}
    classes: list[str] = []
    for s in SPLITS:
        path = d / f"multilabel-{s}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split file not found")
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        if header[:2] != ["s1_path", "s2_path"]:
            raise SampleError(
                f"{path}: expected columns s1_path, s2_path, <classes>; got {header[:3]}"
            )
        classes = header[2:]
        refs = []
        for line, r in enumerate(body, start=2):
            try:
                hot = np.array([int(float(v)) for v in r[2:]], dtype=np.float32)
            except ValueError:
                raise SampleError(f"{path}:{line}: class columns must be 0/1") from None
            refs.append(SampleRef(Path(r[1]).stem, (r[0], r[1]), hot))
        splits[s] = refs

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        paths = {
            "s1": d / "BigEarthNet-S1-5%" / ref.key[0],
            "s2_l2a": d / "BigEarthNet-S2-5%" / ref.key[1],
        }
        wanted = sensors if sensors is not None else list(paths)
        return RawSample({s: read_geotiff(paths[s]) for s in wanted}, ref.label)

    sensors = {"s1": SensorSpec(S1, "dB"), "s2_l2a": SensorSpec(S2_12, "DN")}
    return splits, load, sensors, "multilabel", classes


def _dfc(d: Path) -> tuple[dict, Callable[[SampleRef], RawSample], dict, str, list[str]]:
    splits = {
        s: [SampleRef(Path(f).stem, f) for f in _lines(d / f"dfc-{s}-new.csv")] for s in SPLITS
    }
    lut = np.full(256, 255, dtype=np.int64)
    for src, dst in DFC_MAPPING.items():
        lut[src] = dst

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        label = read_geotiff(d / "dfc" / ref.key)[0].astype(np.int64)
        if label.min() < 0 or label.max() > 255:
            raise SampleError(f"{d / 'dfc' / ref.key}: label values outside 0..255")
        paths = {
            "s1": d / "s1" / ref.key.replace("dfc", "s1"),
            "s2_l1c": d / "s2" / ref.key.replace("dfc", "s2"),
        }
        wanted = sensors if sensors is not None else list(paths)
        images = {s: read_geotiff(paths[s]) for s in wanted}
        return RawSample(images, None, lut[label])

    sensors = {"s1": SensorSpec(S1, "dB"), "s2_l1c": SensorSpec(S2_13, "DN")}
    return splits, load, sensors, "segmentation", list(DFC_CLASSES)


def _lcz(d: Path) -> tuple[dict, Callable[[SampleRef], RawSample], dict, str, list[str]]:
    splits: dict[str, list[SampleRef]] = {}
    for s in SPLITS:
        path = d / f"lcz_{s}.h5"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split file not found")
        with h5py.File(path, "r") as f:
            if "sen2" not in f or "label" not in f:
                raise SampleError(f"{path}: expected datasets 'sen2' and 'label'")
            labels = np.asarray(f["label"]).argmax(1)
        splits[s] = [SampleRef(f"{s}_{i}", (str(path), i), int(c)) for i, c in enumerate(labels)]

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        path, i = ref.key
        with h5py.File(path, "r") as f:
            x = np.asarray(f["sen2"][i], dtype=np.float32)  # (32, 32, 10)
        return RawSample({"s2_l1c": np.moveaxis(x, -1, 0)}, ref.label)

    bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    return (
        splits,
        load,
        {"s2_l1c": SensorSpec(bands, "reflectance")},
        "classification",
        list(LCZ_CLASSES),
    )


def load_copernicus(name: str, data_root: str | Path, *, image_size: int | None = None) -> EvalTask:
    """A Copernicus-Bench task (names in :data:`COPERNICUS_TASKS`)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in COPERNICUS_TASKS:
        raise ValueError(
            f"unknown Copernicus-Bench task {name!r}; available: {sorted(COPERNICUS_TASKS)}"
        )
    names, marker, builder, default = COPERNICUS_TASKS[key]
    d = _find_dir(Path(data_root), names, marker)
    if builder == "cloud":
        splits, load, sensors, kind, classes = _cloud(d)
    elif builder.startswith("eurosat"):
        splits, load, sensors, kind, classes = _eurosat(
            d, "s1" if builder.endswith("s1") else "s2_l1c"
        )
    elif builder == "ben":
        splits, load, sensors, kind, classes = _ben(d)
    elif builder == "dfc":
        splits, load, sensors, kind, classes = _dfc(d)
    else:
        splits, load, sensors, kind, classes = _lcz(d)
    stats = dict(COPERNICUS_STATS)
    if builder == "lcz":
        stats["s2_l1c"] = Stats(_LCZ_MEAN, _LCZ_STD, "Copernicus-Bench LCZ (x 1e4)")
    return EvalTask(
        benchmark="copernicus",
        name=key,
        kind=kind,  # type: ignore[arg-type]
        classes=classes,
        sensors=sensors,
        splits=splits,
        load=load,
        root=d,
        image_size=image_size or _SIZES.get(builder, 224),
        default_sensors=default,
        stats=stats,
    )
