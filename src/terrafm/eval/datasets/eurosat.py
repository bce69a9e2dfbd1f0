"""EuroSAT-MS as distributed: ``<Class>/<Class>_<n>.tif`` folders (docs/design.md, "Evaluation protocols / EuroSAT-MS folders").

Each file is a 13-band Sentinel-2 L1C GeoTIFF (uint16 DN) in the order B01..B12 then **B8A last**;
the files carry no band names, so the order is declared here and mapped by name. Classes are the
folder names, indexed alphabetically (AnnualCrop = 0 ... SeaLake = 9).

Splits: the published split lists ``eurosat-{train,val,test}.txt`` (one file name per line, as used
by torchgeo and Copernicus-Bench, ``.jpg`` names mapped to ``.tif``) when they lie in the root;
otherwise a seeded stratified split (``fractions`` of each class, or ``train_per_class`` images per
class for few-shot work with the rest split between val and test).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terrafm.eval.datasets.folder import read_geotiff
from terrafm.eval.tasks import EvalTask, RawSample, SampleRef, SensorSpec

__all__ = ["EUROSAT_BANDS", "EUROSAT_CLASSES", "load_eurosat"]

EUROSAT_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip
EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
    "PermanentCrop", "Residential", "River", "SeaLake",
)  # fmt: skip
# The official archive nests the class folders here.
_NESTED = Path("ds/images/remote_sensing/otherDatasets/sentinel_2/tif")


def _find_class_root(root: Path) -> Path:
    for cand in (root, root / _NESTED, root / "2750", root / "all_imgs"):
        if cand.is_dir() and any((cand / c).is_dir() for c in EUROSAT_CLASSES):
            return cand
    raise FileNotFoundError(
        f"{root}: no EuroSAT-MS class folders ({', '.join(EUROSAT_CLASSES[:3])}, ...) found here "
        f"or under {_NESTED}"
    )


def _natural(path: Path) -> tuple[str, int]:
    m = re.search(r"_(\d+)$", path.stem)
    return (path.stem.rsplit("_", 1)[0], int(m.group(1)) if m else -1)


def _split_lists(root: Path, files: dict[str, Path]) -> dict[str, list[str]] | None:
    names = {"train": "eurosat-train.txt", "val": "eurosat-val.txt", "test": "eurosat-test.txt"}
    if not all((root / n).is_file() for n in names.values()):
        return None
    out: dict[str, list[str]] = {}
    for split, n in names.items():
        stems = [
            Path(line.strip()).stem for line in (root / n).read_text().splitlines() if line.strip()
        ]
        missing = [s for s in stems if s not in files]
        if missing:
            raise FileNotFoundError(
                f"{root / n}: {len(missing)} listed image(s) not found, e.g. {missing[0]}.tif"
            )
        out[split] = stems
    return out


def _stratified(
    files: dict[str, Path],
    labels: dict[str, int],
    fractions: tuple[float, float, float],
    train_per_class: int | None,
    seed: int,
) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in sorted(set(labels.values())):
        stems = sorted((s for s in files if labels[s] == c), key=lambda s: _natural(files[s]))
        order = [stems[i] for i in rng.permutation(len(stems))]
        if train_per_class is not None:
            n_train = min(train_per_class, len(order))
            rest = len(order) - n_train
            n_val = int(round(rest * fractions[1] / max(fractions[1] + fractions[2], 1e-9)))
        else:
            n_train = int(round(len(order) * fractions[0]))
            n_val = int(round(len(order) * fractions[1]))
        out["train"] += order[:n_train]
        out["val"] += order[n_train : n_train + n_val]
        out["test"] += order[n_train + n_val :]
    return out


def load_eurosat(
    root: str | Path,
    *,
    image_size: int | None = 64,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    train_per_class: int | None = None,
    seed: int = 0,
) -> EvalTask:
    """EuroSAT-MS folders as a classification task (sensor ``s2_l1c``)."""
    root = Path(root)
    class_root = _find_class_root(root)
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir())
    files: dict[str, Path] = {}
    labels: dict[str, int] = {}
    for ci, c in enumerate(classes):
        for f in sorted((class_root / c).glob("*.tif"), key=_natural):
            files[f.stem] = f
            labels[f.stem] = ci
    if not files:
        raise FileNotFoundError(f"{class_root}: no .tif images in the class folders")
    lists = _split_lists(root, files) or _split_lists(class_root, files)
    split_note = "published split lists"
    if lists is None:
        lists = _stratified(files, labels, fractions, train_per_class, seed)
        split_note = (
            f"seeded stratified split (seed {seed}, "
            + (
                f"{train_per_class} train per class"
                if train_per_class
                else f"fractions {fractions}"
            )
            + ")"
        )
    splits = {
        s: [SampleRef(stem, str(files[stem]), labels[stem]) for stem in stems]
        for s, stems in lists.items()
        if stems
    }

    def load(ref: SampleRef, sensors: Sequence[str] | None = None) -> RawSample:
        return RawSample({"s2_l1c": read_geotiff(Path(ref.key))}, ref.label)

    return EvalTask(
        benchmark="eurosat",
        name="eurosat-ms",
        kind="classification",
        classes=classes,
        sensors={"s2_l1c": SensorSpec(EUROSAT_BANDS, "DN")},
        splits=splits,
        load=load,
        root=root,
        image_size=image_size,
        notes=[f"bands B01..B12 then B8A last (mapped by name); {split_note}"],
    )
