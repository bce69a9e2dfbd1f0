"""How spread out and how linearly separable the synthetic world's classes are, against real EuroSAT-MS.

Compares the ``s2_l1c`` chips of a world's ``landcover_cls`` task with the real EuroSAT-MS L1C sample
in ``../shared/data/real/eurosat-ms-geotorchai`` (20 chips per class, Europe only) on five classes
both have: tree cover (EuroSAT Forest), cropland (AnnualCrop), grassland (Pasture +
HerbaceousVegetation), water (SeaLake) and built-up (Residential + Industrial). Per class:

- the spread of the chips' mean NDVI and the coefficient of variation of their mean brightness
  across chips (how much a class's spectrum varies between acquisitions and places);
- the median within-chip NDVI standard deviation (texture inside a chip);

and for the five classes together, a per-pixel logistic regression on the 12 log-DN bands, trained
on half of the chips and tested on the other half (both ways, balanced accuracy): how far single
pixels' spectra alone tell the classes apart across places. The real sample covers one continent,
so its spreads are a lower bound for a global world.

    .venv/bin/python benchmarks/world_realism.py runs/probe-world/tasks [more task roots ...]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import rasterio

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
EUROSAT_ORDER = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"
)  # fmt: skip
GROUPS = {
    "tree_cover": ("Forest",),
    "cropland": ("AnnualCrop",),
    "grassland": ("Pasture", "HerbaceousVegetation"),
    "permanent_water_bodies": ("SeaLake",),
    "built_up": ("Residential", "Industrial"),
}
EUROSAT = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "real"
    / ("eurosat-ms-geotorchai")
)


def _read(path: Path, order: tuple[str, ...]) -> np.ndarray:
    with rasterio.open(path) as ds:
        x = ds.read().astype(np.float32)
    idx = [order.index(b) for b in BANDS]
    return x[idx]  # (12, H, W)


def eurosat_chips(root: Path) -> dict[str, list[np.ndarray]]:
    """Class group -> list of (12, 64, 64) L1C chips of the real sample."""
    if not (root / "index.csv").exists():
        raise FileNotFoundError(f"EuroSAT-MS sample not found: {root / 'index.csv'}")
    out: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
    with open(root / "index.csv") as f:
        for row in csv.DictReader(f):
            for g, names in GROUPS.items():
                if row["label"] in names:
                    out[g].append(_read(root / row["path"], EUROSAT_ORDER))
    return out


def world_chips(tasks: Path, per_class: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Class group -> up to ``per_class`` (12, H, W) ``s2_l1c`` chips of a world's task."""
    task = tasks / "landcover_cls"
    meta = json.loads((task / "task.json").read_text())
    names = meta["sensors"]["s2_l1c"]["bands"]
    with open(task / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for g in GROUPS:
        if g not in meta["classes"]:
            continue
        k = meta["classes"].index(g)
        mine = [r["sample_id"] for r in rows if int(r["label"]) == k]
        pick = [mine[i] for i in sorted(rng.permutation(len(mine))[:per_class])]
        out[g] = [_read(task / "s2_l1c" / f"{s}.tif", tuple(names)) for s in pick]
    return out


def _ndvi(x: np.ndarray) -> np.ndarray:
    r, n = x[BANDS.index("B04")], x[BANDS.index("B08")]
    return (n - r) / (n + r + 1e-6)


def spread(chips: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per class: chip-mean NDVI mean and std, brightness CV across chips, within-chip NDVI std."""
    out = {}
    vis_nir = [BANDS.index(b) for b in ("B02", "B03", "B04", "B08")]
    for g, xs in chips.items():
        ndvi = np.array([_ndvi(x.mean((1, 2))[:, None, None]).item() for x in xs])
        bright = np.array([x[vis_nir].mean() for x in xs])
        within = np.array([_ndvi(x).std() for x in xs])
        out[g] = {
            "n": len(xs),
            "ndvi_mean": float(ndvi.mean()),
            "ndvi_std": float(ndvi.std()),
            "bright_cv": float(bright.std() / bright.mean()),
            "within_ndvi_std": float(np.median(within)),
        }
    return out


def pixel_separability(chips: dict[str, list[np.ndarray]], per_chip: int = 256) -> float:
    """Balanced accuracy of a per-pixel logistic regression on log DN, 2-fold split by chip."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    feats: list[list[np.ndarray]] = [[], []]
    labels: list[list[np.ndarray]] = [[], []]
    for k, g in enumerate(sorted(chips)):
        for j, x in enumerate(chips[g]):
            px = np.log(np.maximum(x.reshape(12, -1).T, 1.0))
            px = px[rng.permutation(len(px))[:per_chip]]
            feats[j % 2].append(px)
            labels[j % 2].append(np.full(len(px), k))
    acc = []
    for a in (0, 1):
        xa, ya = np.concatenate(feats[a]), np.concatenate(labels[a])
        xb, yb = np.concatenate(feats[1 - a]), np.concatenate(labels[1 - a])
        sc = StandardScaler().fit(xa)
        clf = LogisticRegression(max_iter=500).fit(sc.transform(xa), ya)
        acc.append(balanced_accuracy_score(yb, clf.predict(sc.transform(xb))))
    return float(np.mean(acc))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("tasks", nargs="*", help="task roots of generated worlds (<world>/tasks)")
    p.add_argument("--eurosat", default=str(EUROSAT))
    p.add_argument("--per-class", type=int, default=40, help="synthetic chips per class")
    args = p.parse_args()
    sources = {"EuroSAT-MS (real)": eurosat_chips(Path(args.eurosat))}
    for t in args.tasks:
        sources[t] = world_chips(Path(t), args.per_class)
    print("| source | class | chips | chip NDVI mean | chip NDVI std | brightness CV | "
          "within-chip NDVI std |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    sep = {}
    for name, chips in sources.items():
        for g, s in spread(chips).items():
            print(
                f"| {name} | {g} | {s['n']} | {s['ndvi_mean']:.2f} | {s['ndvi_std']:.3f} | "
                f"{s['bright_cv']:.3f} | {s['within_ndvi_std']:.3f} |"
            )
        sep[name] = pixel_separability(chips)
    print("\n| source | per-pixel linear balanced accuracy, 5 classes, split by chip |")
    print("|---|---|")
    for name, acc in sep.items():
        print(f"| {name} | {100 * acc:.1f} |")


if __name__ == "__main__":
    main()
