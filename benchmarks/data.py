"""Pretraining data pipeline: the parquet path vs the prepared shards, side by side in one run.

Writes a small Major-TOM root (S2L2A + S2L1C + S1RTC, real-size 1068 px cells by default) with the
package's own writer into a temp folder and prepares it into a shard store (``terrafm prepare``).
Then, for both paths on the same cells and views:

- CPU milliseconds per three-sensor sample (process CPU time of all threads, 0 workers, torch on
  one thread): parquet row group -> GeoTIFF decode -> resampling -> normalisation -> per-sample
  views, vs shard crop-window read -> batched views on the CPU;
- samples/s and peak resident memory (main process + workers) with 0, 1 and 2 DataLoader workers;
- shard bytes vs source parquet bytes, ``prepare`` throughput and its peak memory;
- optionally (``--model-steps``) the rate at which terrafm_tiny trains on the same batches.

    .venv/bin/python benchmarks/data.py [--cells 6] [--cell-size 1068] [--batch-size 8]
        [--batches 6] [--workers 0 1 2] [--global-size 224 --local-size 96 --n-local 8]
        [--baseline-src DIR] [--quick] [--json FILE]

The shards are prepared in the default layout (each band at its native resolution) and, for
comparison, on the 10 m grid (``native=False``). The CPU figures are given for both resampling
filters (``MultiCropConfig.resample``:
``antialias``, the default, and ``bilinear``) and for the shards with both chunk codecs (``zstd``,
``lz4hc``), each the least of ``--repeats`` interleaved rounds. With ``--baseline-src DIR`` (the
``src`` folder of another version of the package, e.g. ``git archive REV src | tar -x -C
/tmp/base``) the shards' CPU figure is also measured for that version and for this one the same
way, each in a fresh subprocess on the same store and keys ("before" / "after").

``--quick`` (3 cells, batch 4, 2 timed batches, no model step) runs in about 6 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from terrafm.data.landcover import WORLDCOVER_CLASSES, LandCover, write_landcover
from terrafm.data.loader import build_pretrain_loader
from terrafm.data.majortom import PRODUCTS, MajorTomSample, native_size, write_product
from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.shards import build_shard_loader, collate_raw, prepare_shards

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


def _loader(path: Path, shards: bool, views: MultiCropConfig, batch: int, n: int, workers: int):  # type: ignore[no-untyped-def]
    kw = {"views": views, "samples_per_epoch": n, "num_workers": workers, "seed": 0}
    if shards:
        return build_shard_loader(path, SENSORS, batch, augment_device="cpu", **kw)  # type: ignore[arg-type]
    return build_pretrain_loader([path], SENSORS, batch, **kw)  # type: ignore[arg-type]


def time_pipeline(
    path: Path, shards: bool, views: MultiCropConfig, batch: int, batches: int, workers: int
) -> tuple[float, float]:
    """(samples/s, peak MiB) of ``batches`` batches after one warm-up batch."""
    loader = _loader(path, shards, views, batch, batch * (batches + 1), workers)
    with PeakMemory() as mem:
        it = iter(loader)
        next(it)  # worker start-up and first files opened
        t0 = time.perf_counter()
        n = sum(b["index"].numel() for b in it)
        dt = time.perf_counter() - t0
    return n / dt, mem.mib


def cpu_per_sample(
    path: Path, shards: bool, views: MultiCropConfig, batch: int, batches: int
) -> float:
    """CPU milliseconds (all threads of this process) per sample, 0 workers, after a warm-up."""
    loader = _loader(path, shards, views, batch, batch * (batches + 1), 0)
    it = iter(loader)
    next(it)
    c0 = time.process_time()
    n = sum(b["index"].numel() for b in it)
    return 1e3 * (time.process_time() - c0) / n


def baseline_cpu_per_sample(
    src: Path, store: Path, views: MultiCropConfig, batch: int, batches: int
) -> float:
    """:func:`cpu_per_sample` of the shards (antialiased views on the CPU) with the package
    found in ``src``, in a fresh subprocess on the same store and settings (the least of three
    rounds there). Run for ``--baseline-src`` and for this version alike, so that before and
    after are measured the same way."""
    args = [sys.executable, __file__, "--measure-shards", str(store), "--batch-size", str(batch)]
    args += ["--batches", str(batches), "--global-size", str(views.global_size)]
    args += ["--local-size", str(views.local_size), "--n-local", str(views.n_local)]
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["cpu_ms"])


def cpu_per_sample_raw(store: Path, views: MultiCropConfig, batch: int, batches: int) -> float:
    """CPU ms per sample of what a worker does when the views are cut on the accelerator
    (``augment_device=cuda``): crop-window reads and the collate of raw windows, 0 workers."""
    loader = _loader(store, True, views, batch, batch * (batches + 1), 0)
    ds, keys = loader.dataset, list(loader.sampler)
    collate_raw([ds[k] for k in keys[:batch]], SENSORS)  # warm-up (files opened)
    c0 = time.process_time()
    for lo in range(batch, len(keys), batch):
        collate_raw([ds[k] for k in keys[lo : lo + batch]], SENSORS)
    return 1e3 * (time.process_time() - c0) / (len(keys) - batch)


def _bytes(root: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in root.rglob(pattern) if f.is_file())


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
    p.add_argument("--prepare-workers", type=int, default=2)
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--n-local", type=int, default=8)
    p.add_argument("--model-steps", type=int, default=0, help="also time terrafm_tiny (0: skip)")
    p.add_argument("--quick", action="store_true", help="3 cells, batch 4, 2 timed batches")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    p.add_argument("--baseline-src", type=Path, default=None, help="also time this package src")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the CPU figures (least kept)")
    p.add_argument("--measure-shards", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure_shards is not None:  # the baseline's subprocess: one figure, as JSON
        torch.set_num_threads(1)
        v = MultiCropConfig(
            global_size=args.global_size, local_size=args.local_size, n_local=args.n_local
        )
        # the least of a few rounds: the first ones in a fresh process pay its warm-up
        ms = min(
            cpu_per_sample(args.measure_shards, True, v, args.batch_size, args.batches)
            for _ in range(3)
        )
        print(json.dumps({"cpu_ms": ms}))
        return
    if args.quick:
        args.cells, args.batch_size, args.batches, args.model_steps = 3, 4, 2, 0
    views = MultiCropConfig(
        global_size=args.global_size, local_size=args.local_size, n_local=args.n_local
    )
    settings = {
        k: getattr(args, k)
        for k in ("cells", "cell_size", "batch_size", "batches", "workers", "prepare_workers")
    }
    settings |= {"views": f"2x{args.global_size} + {args.n_local}x{args.local_size}"}
    settings |= {"sensors": list(SENSORS), "cpus": os.cpu_count(), "repeats": args.repeats}
    out: dict[str, object] = {"settings": settings}
    with tempfile.TemporaryDirectory() as tmp:
        root, store = Path(tmp) / "majortom", Path(tmp) / "shards"
        t0 = time.perf_counter()
        write_world(root, args.cells, args.cell_size)
        source_bytes = _bytes(root, "*.parquet")
        print(
            f"data: {args.cells} cells x 3 products of {args.cell_size} px "
            f"({source_bytes / 2**20:.1f} MiB parquet, written in {time.perf_counter() - t0:.1f} s); "
            f"tiles {args.cell_size // 2} px; views {settings['views']}; batch {args.batch_size}; "
            f"{os.cpu_count()} CPUs"
        )
        with PeakMemory() as mem:
            rep = prepare_shards([root], store, SENSORS, workers=args.prepare_workers)
        shard_bytes = _bytes(store)
        print(
            f"prepare: {rep.tiles} tiles in {rep.seconds:.1f} s with {args.prepare_workers} workers "
            f"({rep.tiles / rep.seconds:.2f} tiles/s, {rep.tiles / 4 / rep.seconds * 3600:.0f} "
            f"cells/h), peak {mem.mib:.0f} MiB; shards {shard_bytes / 2**20:.1f} MiB = "
            f"{shard_bytes / source_bytes:.2f} x the parquet"
        )
        grid = Path(tmp) / "shards_grid10"  # every band on the 10 m grid (version-1 layout)
        prepare_shards([root], grid, SENSORS, workers=args.prepare_workers, native=False)
        grid_bytes = _bytes(grid)
        print(
            f"prepare on the 10 m grid (native=False): shards {grid_bytes / 2**20:.1f} MiB = "
            f"{grid_bytes / source_bytes:.2f} x the parquet"
        )
        lz4 = Path(tmp) / "shards_lz4hc"  # the faster-to-decode codec (prepare --codec lz4hc)
        t1 = time.perf_counter()
        prepare_shards([root], lz4, SENSORS, workers=args.prepare_workers, codec="lz4hc")
        lz4_bytes = _bytes(lz4)
        print(
            f"prepare --codec lz4hc: {time.perf_counter() - t1:.1f} s; shards "
            f"{lz4_bytes / 2**20:.1f} MiB = {lz4_bytes / source_bytes:.2f} x the parquet"
        )
        torch.set_num_threads(1)
        bilinear = replace(views, resample="bilinear")
        nb, nt = args.batch_size, args.batches
        measures: dict[str, Callable[[], float]] = {
            "parquet": lambda: cpu_per_sample(root, False, views, nb, nt),
            "shards": lambda: cpu_per_sample(store, True, views, nb, nt),
            "parquet_bilinear": lambda: cpu_per_sample(root, False, bilinear, nb, nt),
            "shards_bilinear": lambda: cpu_per_sample(store, True, bilinear, nb, nt),
            "shards_views_on_gpu": lambda: cpu_per_sample_raw(store, views, nb, nt),
            "grid10": lambda: cpu_per_sample(grid, True, views, nb, nt),
            "grid10_bilinear": lambda: cpu_per_sample(grid, True, bilinear, nb, nt),
            "lz4hc": lambda: cpu_per_sample(lz4, True, views, nb, nt),
            "lz4hc_bilinear": lambda: cpu_per_sample(lz4, True, bilinear, nb, nt),
            "lz4hc_views_on_gpu": lambda: cpu_per_sample_raw(lz4, views, nb, nt),
        }
        if args.baseline_src is not None:  # before / after, each the same way: a subprocess
            import terrafm

            old, new = args.baseline_src, Path(terrafm.__file__).resolve().parents[1]
            measures = {
                "shards_baseline": lambda: baseline_cpu_per_sample(old, store, views, nb, nt),
                "shards_subprocess": lambda: baseline_cpu_per_sample(new, store, views, nb, nt),
                **measures,
            }
        # each figure the least of --repeats rounds, the rounds interleaved (load spikes of
        # other jobs on the machine only ever add CPU time)
        runs: dict[str, list[float]] = {k: [] for k in measures}
        for _ in range(args.repeats):
            for k, f in measures.items():
                runs[k].append(f())
        cpu = {k: min(v) for k, v in runs.items()}
        cores = {k: 400 * v / 1e3 for k, v in cpu.items()}
        names = {
            "shards_baseline": "before: shards, views on the CPU, --baseline-src (subprocess)",
            "shards_subprocess": "after: shards, views on the CPU, this version (subprocess)",
            "parquet": "parquet (antialias)",
            "shards": "shards, views on the CPU (antialias)",
            "parquet_bilinear": "parquet (bilinear)",
            "shards_bilinear": "shards, views on the CPU (bilinear)",
            "shards_views_on_gpu": "shards, views on the GPU: the workers' share",
            "grid10": "10 m-grid shards (native=False), views on the CPU (antialias)",
            "grid10_bilinear": "10 m-grid shards (native=False), views on the CPU (bilinear)",
            "lz4hc": "lz4hc shards, views on the CPU (antialias)",
            "lz4hc_bilinear": "lz4hc shards, views on the CPU (bilinear)",
            "lz4hc_views_on_gpu": "lz4hc shards, views on the GPU: the workers' share",
        }
        print(f"\n{'':<64}{'CPU ms / sample':>16}{'cores at 400/s':>16}")
        for k, v in cpu.items():
            print(f"{names[k]:<64}{v:>16.1f}{cores[k]:>16.1f}")
        print()
        rates: dict[str, dict[int, tuple[float, float]]] = {"parquet": {}, "shards": {}}
        for w in args.workers:
            for name, path in (("parquet", root), ("shards", store)):
                rates[name][w] = time_pipeline(
                    path, name == "shards", views, args.batch_size, args.batches, w
                )
            a, b = rates["parquet"][w], rates["shards"][w]
            print(f"{f'samples/s, {w} workers':<28}{a[0]:>10.2f}{b[0]:>10.2f}")
            print(f"{f'peak MiB, {w} workers':<28}{a[1]:>10.0f}{b[1]:>10.0f}")
        print(
            f"less CPU per sample than parquet: {cpu['parquet'] / cpu['shards']:.1f}x (views on "
            f"the CPU), {cpu['parquet'] / cpu['shards_views_on_gpu']:.1f}x (views on the GPU)"
        )
        if args.model_steps:
            rate = time_model(root, views, args.batch_size, args.model_steps)
            print(f"{'terrafm_tiny train step':<24}{rate:>12.2f} samples/s")
        out |= {
            "parquet_cpu_ms_per_sample": cpu["parquet"],
            "shards_cpu_ms_per_sample": cpu["shards"],
            "shards_views_on_gpu_cpu_ms_per_sample": cpu["shards_views_on_gpu"],
            "cpu_ms_per_sample": cpu,
            "cpu_ms_per_sample_rounds": runs,
            "cores_per_gpu_at_400_samples_s": cores,
            "source_bytes": source_bytes,
            "shard_bytes": shard_bytes,
            "shard_bytes_lz4hc": lz4_bytes,
            "shard_bytes_grid10": grid_bytes,
            "prepare_tiles_per_s": rep.tiles / rep.seconds,
            "prepare_peak_mib": mem.mib,
            "samples_per_s": {k: {str(w): r[0] for w, r in v.items()} for k, v in rates.items()},
            "peak_mib": {k: {str(w): r[1] for w, r in v.items()} for k, v in rates.items()},
        }
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
