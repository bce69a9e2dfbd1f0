"""Throughput of the pretraining data pipeline vs the model's consumption rate (issue 3).

Writes a small Major-TOM root (S2L2A + S2L1C + S1RTC, real-size 1068 px cells by default) with the
package's own writer into a temp folder, then times the whole pipeline, parquet row group ->
GeoTIFF decode -> resampling -> tiles -> 2 global + N local views -> collated batch, for 0, 1 and 2
DataLoader workers, with the peak resident memory of the main process plus its workers. Beside it,
the rate at which terrafm_tiny trains on the same batches (teacher forward on the global views,
student forward + backward on all views, like one DINO step) on this machine.

    .venv/bin/python benchmarks/data.py [--cells 6] [--cell-size 1068] [--batch-size 8]
        [--batches 6] [--workers 0 1 2] [--global-size 224 --local-size 96 --n-local 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from terrafm.data.landcover import WORLDCOVER_CLASSES, LandCover, write_landcover
from terrafm.data.loader import build_pretrain_loader
from terrafm.data.majortom import PRODUCTS, MajorTomSample, native_size, write_product
from terrafm.data.multicrop import MultiCropConfig

SENSORS = ("s1", "s2_l1c", "s2_l2a")


def _field(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth random field in [0, 1] (sum of a few low-frequency waves)."""
    y, x = np.mgrid[0:n, 0:n] / n
    f = sum(
        np.sin(2 * np.pi * (rng.uniform(0.5, 4) * x + rng.uniform(0.5, 4) * y + rng.random()))
        for _ in range(4)
    )
    return (f - f.min()) / (np.ptp(f) + 1e-9)


def write_world(root: Path, cells: int, size: int, seed: int = 0) -> None:
    """``cells`` cells of ``size`` px in all three products plus a land-cover table."""
    rng = np.random.default_rng(seed)
    names = [f"{i + 1}U_{i + 1}R" for i in range(cells)]
    for product in ("S2L2A", "S2L1C", "S1RTC"):
        spec, samples = PRODUCTS[product], []
        for name in names:
            base = _field(rng, size)
            bands = {}
            for b in spec.bands:
                n = native_size(b, size)
                f = base[:: size // n, :: size // n][:n, :n]
                if product == "S1RTC":
                    bands[b] = (0.01 + 0.2 * f * rng.gamma(4, 0.25, f.shape)).astype(np.float32)
                else:
                    bands[b] = (
                        (300 + 3000 * f + rng.normal(0, 30, f.shape))
                        .clip(1, 10000)
                        .astype(np.uint16)
                    )
            if spec.mask_column:
                bands[spec.mask_column] = np.zeros((size, size), np.uint8)
            samples.append(
                MajorTomSample(
                    name,
                    f"S2A_MSI{product[2:]}_20210601T100000_N0300_R022_T33UUU_20210601",
                    datetime(2021, 6, 1),
                    bands,
                    "EPSG:32633",
                    (10.0, 0, 500000.0, 0, -10.0, 5000000.0),
                    45.0,
                    12.0,
                    cloud_cover=None if product == "S1RTC" else 0.0,
                    orbit_state="ascending" if product == "S1RTC" else None,
                )
            )
        write_product(root, product, samples, rows_per_file=4)
    recs = []
    for i, name in enumerate(names):
        cls = WORLDCOVER_CLASSES[i % 5]
        hist = tuple(1.0 if c == cls else 0.0 for c in WORLDCOVER_CLASSES)
        recs.append(LandCover(name, cls, hist, "Cfb", "europe"))
    write_landcover(root, recs)


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class PeakMemory:
    """Peak RSS (MiB) of this process plus its children, sampled every 20 ms."""

    def __enter__(self) -> PeakMemory:
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = _rss_kib(me) + sum(_rss_kib(c) for c in _children(me))
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def mib(self) -> float:
        return self.peak / 1024


def time_pipeline(
    root: Path, views: MultiCropConfig, batch: int, batches: int, workers: int
) -> tuple[float, float]:
    """(samples/s, peak MiB) of ``batches`` batches after one warm-up batch."""
    loader = build_pretrain_loader(
        [root],
        SENSORS,
        batch,
        views=views,
        samples_per_epoch=batch * (batches + 1),
        num_workers=workers,
        seed=0,
    )
    with PeakMemory() as mem:
        it = iter(loader)
        next(it)  # worker start-up and first files opened
        t0 = time.perf_counter()
        n = sum(b["index"].numel() for b in it)
        dt = time.perf_counter() - t0
    return n / dt, mem.mib


def time_model(root: Path, views: MultiCropConfig, batch: int, steps: int) -> float:
    """terrafm_tiny samples/s for a DINO-like step on real batches from the pipeline."""
    from terrafm.models import create_model

    torch.manual_seed(0)
    student, teacher = create_model("terrafm_tiny").train(), create_model("terrafm_tiny").eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    loader = build_pretrain_loader(
        [root], SENSORS, batch, views=views, samples_per_epoch=batch * 2, seed=1
    )
    data = list(loader)

    def step(b: dict) -> None:  # type: ignore[type-arg]
        with torch.no_grad():
            t = [teacher(v["inputs"], v["masks"]) for v in b["teacher"]]
        s = [student(v["inputs"], v["masks"]) for v in b["student_global"] + b["student_local"]]
        loss = sum(((x - t[0]) ** 2).mean() for x in s)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    step(data[0])  # warm-up
    t0 = time.perf_counter()
    for k in range(steps):
        step(data[k % len(data)])
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=6)
    p.add_argument("--cell-size", type=int, default=1068)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--n-local", type=int, default=8)
    p.add_argument("--model-steps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    views = MultiCropConfig(
        global_size=args.global_size, local_size=args.local_size, n_local=args.n_local
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_world(root, args.cells, args.cell_size)
        size_mib = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 2**20
        print(
            f"data: {args.cells} cells x 3 products of {args.cell_size} px ({size_mib:.1f} MiB parquet, "
            f"written in {time.perf_counter() - t0:.1f} s); tiles {args.cell_size // 2} px; views "
            f"2x{args.global_size} + {args.n_local}x{args.local_size}; batch {args.batch_size}; "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
        )
        print(f"{'pipeline':<28}{'samples/s':>12}{'peak MiB':>12}")
        for w in args.workers:
            rate, mib = time_pipeline(root, views, args.batch_size, args.batches, w)
            print(f"{f'parquet -> views, {w} workers':<28}{rate:>12.2f}{mib:>12.0f}")
        rate = time_model(root, views, args.batch_size, args.model_steps)
        print(f"{'terrafm_tiny train step':<28}{rate:>12.2f}{'':>12}")


if __name__ == "__main__":
    main()
