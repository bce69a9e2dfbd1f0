"""Scene embedding throughput vs the bare model, and peak memory.

Writes a synthetic Sentinel-2 L1C scene in the SAFE ``IMG_DATA`` layout (one GeoTIFF per band at its
native 10/20/60 m grid, so the 20 m and 60 m bands go through the resampling path) into a temp
folder, then measures, each in a fresh process on this machine:

- model only: ``forward_features`` on random batches of the same windows, already in memory;
- scene: ``embed_scene`` on the scene (reading, resampling, normalisation, model, GeoTIFF and
  GeoParquet writing, checkpoints), with its peak resident memory.

The model-only run is done before and after the scene run (machine noise), and the table shows both.
"Efficiency" is the scene run's model pixels per second (window pixels computed, edge windows
included) over the model-only rate: the share of the model's speed the pipeline keeps. The scene run
includes its one-time setup (weights digest for the run fingerprint, fast-path weight folding, the
first batch), about 1 s for TerraFM-B on a CPU; the default 3584 x 3584 scene (256 windows of
224 px) amortises it as a real scene does, ``--size 1792`` (64 windows) shows it.

    .venv/bin/python benchmarks/embed.py [--model terrafm_base] [--size 3584] [--full-tile]
        [--window 224] [--batch-size 8] [--device auto] [--precision auto] [--readers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_TILE = 10980  # a Sentinel-2 tile at 10 m
STRIP = 1024  # rows written at a time when generating the scene
BANDS = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B09"),
}


def write_scene(folder: Path, size: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` (10 m) L1C scene, one tiled GeoTIFF per band, written in strips."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    img = folder / "IMG_DATA"
    img.mkdir(parents=True)
    for res, names in BANDS.items():
        n = math.ceil(size * 10 / res)
        t = Affine(res, 0, 300000, 0, -res, 5900000)
        for name in names:
            level, amp = rng.uniform(800, 3000), rng.uniform(200, 800)
            fx, fy = rng.uniform(2, 12, 2) / n
            profile = dict(
                driver="GTiff",
                width=n,
                height=n,
                count=1,
                dtype="uint16",
                crs="EPSG:32633",
                transform=t,
                tiled=True,
                blockxsize=512,
                blockysize=512,
            )
            with rasterio.open(img / f"T33UUU_20240101T100000_{name}.tif", "w", **profile) as dst:
                x = np.arange(n)
                for r in range(0, n, STRIP):
                    h = min(STRIP, n - r)
                    y = np.arange(r, r + h)[:, None]
                    field = np.sin(2 * np.pi * fx * x)[None] + np.cos(2 * np.pi * fy * y)
                    vals = level + amp * field + rng.normal(0, 50, (h, n))
                    dst.write(
                        np.clip(vals, 1, 65535).astype(np.uint16)[None], window=Window(0, r, n, h)
                    )
    return img


def _child_model(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from terrafm.models import create_model

    model = create_model(args.model).eval().to(args.device)
    x = {"s2_l1c": torch.randn(args.batch_size, 12, args.window, args.window, device=args.device)}
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    dev = torch.device(args.device).type

    def step() -> None:
        ctx = (
            torch.autocast(dev, dtype=dtype)
            if dtype is not None
            else torch.autocast(dev, enabled=False)
        )
        with torch.inference_mode(), ctx:
            out = model.forward_features(x)
            out["x_norm_patchtokens"].float().cpu()  # the pipeline also brings features to host

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    dt = time.perf_counter() - t0
    return {"pixels_per_s": args.iters * args.batch_size * args.window**2 / dt, "seconds": dt}


def _child_scene(args: argparse.Namespace) -> dict[str, float]:
    from terrafm.config import from_dict
    from terrafm.embed import EmbedOptions, SourceSpec, embed_scene
    from terrafm.models import create_model

    model = create_model(args.model)
    out = Path(args.workdir) / "out"
    given = {
        k: getattr(args, k) for k in ("window", "batch_size", "device", "precision", "readers")
    }
    opts = from_dict(EmbedOptions, {**given, "progress": False, "overwrite": True})
    t0 = time.perf_counter()
    rep = embed_scene(
        model,
        [SourceSpec("s2_l1c", args.scene)],
        out / "emb.tif",
        table=out / "emb.parquet",
        preview=out / "emb.png" if args.preview else None,
        options=opts,
        model_name=args.model,
        max_windows=args.max_windows or None,
    )
    dt = time.perf_counter() - t0
    windows = rep.computed + rep.skipped
    return {
        "seconds": dt,
        "windows": windows,
        "scene_pixels_per_s": rep.scene_pixels * windows / rep.windows / dt,
        "model_pixels_per_s": windows * args.window**2 / dt,
        "model_seconds": rep.model_seconds,
        "wait_seconds": rep.wait_seconds,
        "out_shape": list(_shape(out / "emb.tif")),
    }


def _shape(path: Path) -> tuple[int, int, int]:
    import rasterio

    with rasterio.open(path) as src:
        return src.count, src.height, src.width


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    try:
        res = _child_model(args) if args.child == "model" else _child_scene(args)
    except KeyboardInterrupt:  # --max-windows: a partial run, still timed by the parent
        res = {}
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(res))


def _run_child(kind: str, args: argparse.Namespace, scene: Path, workdir: Path) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--scene",
        str(scene),
        "--workdir",
        str(workdir),
    ]
    for k in ("model", "window", "batch_size", "device", "precision", "readers", "iters"):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    if args.max_windows:
        cmd += ["--max-windows", str(args.max_windows)]
    if args.preview:
        cmd.append("--preview")
    res = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        sys.exit(f"{kind} run failed:\n{res.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="terrafm_base")
    p.add_argument("--size", type=int, default=3584, help="synthetic scene side at 10 m (pixels)")
    p.add_argument(
        "--full-tile", action="store_true", help=f"a full {FULL_TILE} x {FULL_TILE} tile"
    )
    p.add_argument("--window", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--readers", type=int, default=2)
    p.add_argument("--iters", type=int, default=4, help="model-only batches timed")
    p.add_argument("--max-windows", type=int, default=0, help="stop the scene run after N windows")
    p.add_argument(
        "--preview", action="store_true", help="the scene run also draws the PCA preview"
    )
    p.add_argument("--child", choices=("model", "scene"), help=argparse.SUPPRESS)
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device == "auto" or args.precision == "auto":
        import torch

        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.precision == "auto":
            args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.child:
        _child(args)
        return
    size = FULL_TILE if args.full_tile else args.size
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="terrafm-embed-bench-") as tmp:
        t0 = time.perf_counter()
        scene = write_scene(Path(tmp), size)
        print(
            f"wrote a synthetic {size} x {size} L1C scene (10/20/60 m band files) in {time.perf_counter() - t0:.0f} s"
        )
        before = _run_child("model", args, scene, Path(tmp))
        sc = _run_child("scene", args, scene, Path(tmp))
        after = _run_child("model", args, scene, Path(tmp))
    _report(args, size, load, before, sc, after)


def _report(
    args: argparse.Namespace, size: int, load: float, before: dict, sc: dict, after: dict
) -> None:
    """Print the results table."""
    part = f", first {args.max_windows} windows" if args.max_windows else ""
    print(
        f"\nmodel {args.model}, window {args.window}, batch {args.batch_size}, {args.device} "
        f"{args.precision}, readers {args.readers}, scene {size} x {size}{part}; "
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    rows = [
        ("model only (before scene run)", before["pixels_per_s"], before["peak_rss_gib"]),
        ("model only (after scene run)", after["pixels_per_s"], after["peak_rss_gib"]),
    ]
    if "seconds" in sc:
        fwd = sc["windows"] * args.window**2 / sc["model_seconds"]
        rows += [
            ("scene run: window pixels", sc["model_pixels_per_s"], sc["peak_rss_gib"]),
            ("scene run: scene pixels", sc["scene_pixels_per_s"], None),
            ("scene run: inside forward passes", fwd, None),
        ]
    else:
        rows.append(("scene run (stopped early)", None, sc["peak_rss_gib"]))
    print(f"| {'run':34s} | {'pixels/s':>12s} | {'peak RSS':>10s} |")
    print(f"|{'-' * 36}|{'-' * 14}|{'-' * 12}|")
    for name, rate, rss in rows:
        r = f"{rate:12,.0f}" if rate is not None else " " * 12
        m = f"{rss:6.2f} GiB" if rss is not None else " " * 10
        print(f"| {name:34s} | {r} | {m} |")
    if "seconds" in sc:
        model_rate = (before["pixels_per_s"] + after["pixels_per_s"]) / 2
        print(
            f"\nefficiency, scene window px/s over model-only px/s: {sc['model_pixels_per_s'] / model_rate:.1%}"
        )
        print(
            f"model busy, forward time over scene run time: {sc['model_seconds'] / sc['seconds']:.1%}"
        )
        print(
            f"scene run: {sc['windows']} windows in {sc['seconds']:.1f} s, {sc['model_seconds']:.1f} s in "
            f"forward passes, {sc['wait_seconds']:.1f} s waiting for reads; output {sc['out_shape']} "
            "(features, rows, cols)"
        )


if __name__ == "__main__":
    main()
