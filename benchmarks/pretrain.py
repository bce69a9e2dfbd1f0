"""Pretraining step throughput and model FLOP utilisation (MFU) of TerraFM (docs/design.md, "Objective").

For each shipped config (tiny and B by default) and device (CPU, and CUDA when present) it builds
the real student / teacher / head / loss / optimiser with :func:`terrafm.ssl.train.build_training`,
feeds contract-B batches of the config's crop sizes (noise: this measures the step, not the data
pipeline, see benchmarks/data.py), and prints:

- images/s of the full training step (teacher forward, student forward + backward, clip, AdamW,
  EMA, centre update);
- GFLOP per image of that step, counted by ``torch.utils.flop_counter`` on one real step;
- achieved TFLOP/s, and the matmul TFLOP/s measured on the same device in the same run, in the
  step's dtype (float32, or bfloat16 under autocast);
- MFU = achieved / matmul TFLOP/s.

    .venv/bin/python benchmarks/pretrain.py                       # tiny + base, CPU (+ GPU)
    .venv/bin/python benchmarks/pretrain.py --configs tiny --devices cpu --steps 5
    .venv/bin/python benchmarks/pretrain.py --configs base --devices cuda --batch-size 64
    .venv/bin/python benchmarks/pretrain.py --configs quickstart --compare-amp --steps 8

``--compare-amp`` times float32 and bfloat16-autocast steps of the same config side by side,
alternating one step of each so that the load of a shared machine hits both alike, and prints
the bf16 / fp32 speed ratio; ``--override KEY=VALUE`` (repeatable) changes the config, e.g.
``loss.ibot.enabled=true`` to time the masked patch distillation step.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from terrafm.config import PretrainConfig, load_config, shipped_config
from terrafm.ssl.batch import random_batch
from terrafm.ssl.distributed import DistInfo
from terrafm.ssl.step import to_device, train_step
from terrafm.ssl.train import build_training

_DEFAULT_THREADS = torch.get_num_threads()
CONFIGS = {
    "tiny": "pretrain_tiny_cpu",
    "quickstart": "pretrain_quickstart",
    "base": "pretrain_base_majortom",
    "large": "pretrain_large_majortom",
}
# Per-device default batch: CPU keeps B small enough to finish in minutes.
CPU_BATCH = {"tiny": 64, "quickstart": 64, "base": 2, "large": 1}
GPU_BATCH = {"tiny": 256, "quickstart": 256, "base": 64, "large": 32}
OVERRIDES: list[str] = []  # --override


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best sustained square-matmul TFLOP/s on ``device`` in ``dtype``."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        reps = 10 if device.type == "cuda" else 2
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t))
    return best / 1e12


def _setup(
    name: str, device: torch.device, batch: int, amp: bool
) -> tuple[Any, dict, PretrainConfig]:
    cfg = load_config(
        PretrainConfig,
        shipped_config(CONFIGS[name]),
        [
            f"data.batch_size={batch}",
            f"train.amp={str(amp).lower()}",
            "train.device=" + device.type,
            *OVERRIDES,
        ],
    )
    objs = build_training(cfg, DistInfo(device=device), [10, 30])
    v = cfg.data.multicrop
    batch_ = random_batch(
        batch,
        sensors=cfg.data.sensors,
        global_size=v.global_size,
        local_size=v.local_size,
        n_local=v.n_local,
        keep_prob=v.keep_p,
    )
    return objs, to_device(batch_, device), cfg


def bench(
    name: str, device: torch.device, batch: int, steps: int, amp: bool, threads: int | None
) -> dict[str, Any]:
    objs, b, cfg = _setup(name, device, batch, amp)
    # CPU threads as the config trains (tiny: 1, beside one data worker) unless given.
    torch.set_num_threads(threads or cfg.train.threads or _DEFAULT_THREADS)
    hp = {"lr": 1e-4, "wd": 0.04, "momentum": 0.996, "teacher_temp": 0.04}

    def step() -> None:
        train_step(
            objs.student,
            objs.teacher,
            objs.loss,
            objs.optimizer,
            b,
            hp,
            freeze_last_layer=False,
            clip_grad=3.0,
            amp=amp,
            device=device,
            extras=objs.extras,
        )

    step()  # warm-up (lazy init, kernel selection)
    with FlopCounterMode(display=False) as fc:
        step()
    flops = float(fc.get_total_flops())
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    peak = matmul_tflops(device, torch.bfloat16 if amp else torch.float32)
    achieved = flops / dt / 1e12
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {
        "config": name,
        "model": cfg.model.name,
        "device": device.type,
        "dtype": "bf16" if amp else "fp32",
        "batch": batch,
        "views": f"2x{cfg.data.multicrop.global_size}+{cfg.data.multicrop.n_local}x{cfg.data.multicrop.local_size}",
        "img_s": batch / dt,
        "step_ms": dt * 1e3,
        "gflop_img": flops / batch / 1e9,
        "tflops": achieved,
        "peak": peak,
        "mfu": achieved / peak,
        "mem_gib": mem,
        "threads": torch.get_num_threads(),
    }


def compare_amp(name: str, batch: int, steps: int, threads: int | None) -> None:
    """fp32 and bf16-autocast CPU steps of one config, interleaved; prints the ratio."""
    device = torch.device("cpu")
    runs = {}
    for amp in (False, True):
        objs, b, cfg = _setup(name, device, batch, amp)
        runs[amp] = (objs, b)
    torch.set_num_threads(threads or cfg.train.threads or _DEFAULT_THREADS)
    hp = {"lr": 1e-4, "wd": 0.04, "momentum": 0.996, "teacher_temp": 0.04}

    def step(amp: bool) -> float:
        objs, b = runs[amp]
        t = time.perf_counter()
        train_step(objs.student, objs.teacher, objs.loss, objs.optimizer, b, hp,
                   freeze_last_layer=False, clip_grad=3.0, amp=amp, device=device,
                   extras=objs.extras)  # fmt: skip
        return time.perf_counter() - t

    step(False)
    step(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(steps):
        for amp in (False, True) if i % 2 == 0 else (True, False):
            times[amp].append(step(amp))
    med = {amp: statistics.median(ts) for amp, ts in times.items()}
    print(f"\n{name} ({' '.join(OVERRIDES) or 'as shipped'}), CPU, batch {batch}, "
          f"{torch.get_num_threads()} thread(s), {steps} interleaved steps each")  # fmt: skip
    print("| dtype | step ms (median) | min | max | img/s |")
    print("|---|---|---|---|---|")
    for amp in (False, True):
        ts = times[amp]
        print(f"| {'bf16 autocast' if amp else 'fp32'} | {1e3 * med[amp]:.0f} | "
              f"{1e3 * min(ts):.0f} | {1e3 * max(ts):.0f} | {batch / med[amp]:.1f} |")  # fmt: skip
    print(f"bf16 / fp32 speed: {med[False] / med[True]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "base"], choices=sorted(CONFIGS))
    p.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: all here)")
    p.add_argument("--batch-size", type=int, default=None, help="per step (default per device)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the config's)"
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="step precision; auto: bf16 autocast on GPU, fp32 on CPU",
    )
    p.add_argument("--compare-amp", action="store_true", help="fp32 vs bf16 on CPU, interleaved")
    p.add_argument("--override", action="append", default=[], help="config KEY=VALUE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    OVERRIDES.extend(args.override)
    if args.compare_amp:
        for name in args.configs:
            compare_amp(name, args.batch_size or CPU_BATCH[name], args.steps, args.threads)
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    for dev in devices:
        device = torch.device(dev)
        for name in args.configs:
            gpu = device.type == "cuda"
            batch = args.batch_size or (GPU_BATCH if gpu else CPU_BATCH)[name]
            amp = args.dtype == "bf16" or (args.dtype == "auto" and gpu)
            rows.append(bench(name, device, batch, args.steps, amp, args.threads))
            r = rows[-1]
            print(f"  measured {name} on {dev}: {r['img_s']:.2f} img/s", flush=True)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only"
    print(f"\ntorch {torch.__version__}, GPU: {name}")
    head = (
        "config",
        "model",
        "device",
        "threads",
        "dtype",
        "batch",
        "views",
        "img/s",
        "step ms",
        "GFLOP/img",
        "TFLOP/s",
        "matmul TFLOP/s",
        "MFU",
        "GPU GiB",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r['config']} | {r['model']} | {r['device']} | {r['threads']} | {r['dtype']} | "
            f"{r['batch']} | "
            f"{r['views']} | {r['img_s']:.2f} | {r['step_ms']:.0f} | {r['gflop_img']:.1f} | "
            f"{r['tflops']:.3f} | {r['peak']:.3f} | {100 * r['mfu']:.1f} % | {r['mem_gib']:.1f} |"
        )


if __name__ == "__main__":
    main()
