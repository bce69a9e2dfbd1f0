"""``terrafm embed``: scene rasters -> patch-embedding GeoTIFF, GeoParquet table, PCA preview.

One scene: ``--input SENSOR=PATH`` (repeat for fused sensors) and ``--out``. Many scenes:
``--scene-list scenes.csv``, sharded across ``torchrun`` ranks. See docs/embed.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Any

from terrafm.config import Flag, add_settings_arguments, settings_from_args
from terrafm.embed.pipeline import EmbedOptions
from terrafm.sensors import SENSOR_KEYS

log = logging.getLogger("terrafm.embed")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        key, sep, rest = v.partition("=")
        if not sep or key not in SENSOR_KEYS or not rest:
            raise SystemExit(
                f"error: {flag} {v!r}: expected SENSOR=VALUE with SENSOR in {list(SENSOR_KEYS)}"
            )
        if key in out:
            raise SystemExit(f"error: {flag} given twice for {key}")
        out[key] = rest
    return out


# EmbedOptions fields as flags (the mapping of the command line onto the options, in one place);
# any field can also come from --config FILE (YAML) or --set KEY=VALUE.
_IO = (
    Flag("s1_unit", help="unit of Sentinel-1 values on disk", kwargs={"choices": ("dB", "linear")}),
)
_MODEL = (
    Flag("layer", help="export the normed output of this block instead of the last"),
    Flag("device", help="auto, cpu, cuda or cuda:N (default: auto)"),
    Flag(
        "precision",
        help="auto: bf16 on CUDA, fp32 on CPU (default: auto)",
        kwargs={"choices": ("auto", "fp32", "bf16", "fp16")},
    ),
)
_WINDOWS = (
    Flag("window", help="window side in pixels (multiple of 16)"),
    Flag("overlap", help="overlap of neighbouring windows in pixels (multiple of 16)"),
    Flag("batch_size"),
    Flag("min_valid", help="valid-pixel fraction an output pixel needs"),
    Flag(
        "missing_sensor",
        help="where a fused sensor has no data: embed from the sensors valid there "
        "(fuse-available, recorded per window in the table) or write nodata",
        kwargs={"choices": ("fuse-available", "nodata")},
    ),
    Flag("resampling", help="for 20 m / 60 m bands", kwargs={"choices": ("bilinear", "nearest")}),
)
_RUN = (
    Flag("readers", help="reader threads (default: 2 on CPU, up to 8 on a GPU)"),
    Flag("prefetch", help="batches read ahead"),
    Flag("checkpoint_seconds", help="seconds between resume checkpoints"),
    Flag("gdal_cache_mb"),
    Flag("overwrite", help="replace existing outputs instead of resuming"),
    Flag("progress", help="progress bar (default: on a terminal)"),
)
_FLAGS = (*_IO, *_MODEL, *_WINDOWS, *_RUN)


def add_arguments(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group(
        "inputs and outputs (options also from --config FILE, a YAML file of EmbedOptions fields)"
    )
    io.add_argument(
        "--input",
        action="append",
        metavar="SENSOR=PATH",
        help="a multi-band raster or a folder of one file per band (repeat to fuse sensors)",
    )
    io.add_argument("--out", help="the patch-embedding GeoTIFF to write")
    io.add_argument(
        "--table", help="GeoParquet table with one row per window (footprint, CLS, sources)"
    )
    io.add_argument("--preview", help="PCA-RGB preview PNG")
    io.add_argument(
        "--scene-list",
        help="CSV with columns out[,table,preview] and sensor keys: embed many scenes",
    )
    io.add_argument(
        "--bands",
        action="append",
        metavar="SENSOR=B01,B02,...",
        help="band names of a multi-band raster, in file order",
    )
    io.add_argument(
        "--nodata",
        action="append",
        metavar="SENSOR=VALUE",
        help="nodata value of a sensor's files ('nan': only NaN is nodata)",
    )
    io.add_argument(
        "--boa-offset",
        choices=("auto", "yes", "no"),
        default="auto",
        help="subtract the L2A +1000 DN offset (auto: from MTD_MSIL2A.xml)",
    )
    add_settings_arguments(io, EmbedOptions, _IO)
    m = p.add_argument_group("model")
    m.add_argument(
        "--model", help="model name (terrafm_base ...); optional with a .safetensors checkpoint"
    )
    m.add_argument("--checkpoint", help="published .pth or terrafm .safetensors weights")
    add_settings_arguments(m, EmbedOptions, _MODEL, config_flags=False)
    w = p.add_argument_group("windows")
    add_settings_arguments(w, EmbedOptions, _WINDOWS, config_flags=False)
    r = p.add_argument_group("run")
    add_settings_arguments(r, EmbedOptions, _RUN, config_flags=False)
    r.add_argument("--max-windows", type=int, help="stop after this many windows (resume later)")
    r.add_argument(
        "--fail-fast", action="store_true", help="scene list: stop at the first failing scene"
    )
    r.add_argument(
        "--rank", type=int, help="this process's rank (default: $RANK from torchrun, else 0)"
    )
    r.add_argument("--world-size", type=int, help="number of ranks (default: $WORLD_SIZE, else 1)")


def _device(arg: str) -> str:
    import torch

    if arg != "auto":
        return arg
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _specs(args: argparse.Namespace):  # -> Callable[[str, str], SourceSpec]
    from terrafm.embed import SourceSpec

    bands = {
        k: tuple(b.strip() for b in v.split(",")) for k, v in _pairs(args.bands, "--bands").items()
    }
    nodata = {
        k: (math.nan if v.lower() == "nan" else float(v))
        for k, v in _pairs(args.nodata, "--nodata").items()
    }
    boa = {"auto": None, "yes": True, "no": False}[args.boa_offset]

    def make(sensor: str, path: str) -> SourceSpec:
        return SourceSpec(
            sensor,
            path,
            bands.get(sensor),
            nodata.get(sensor),
            boa if sensor == "s2_l2a" else False,
        )

    return make


def _model(args: argparse.Namespace):  # -> tuple[TerraFM, str]
    from terrafm.models import create_model, load_model

    if args.model is None:
        if args.checkpoint and str(args.checkpoint).endswith(".safetensors"):
            from terrafm.weights.checkpoint import read_metadata

            return load_model(args.checkpoint), str(
                read_metadata(args.checkpoint).get("model_name")
            )
        raise SystemExit(
            "error: --model is required (unless --checkpoint is a terrafm .safetensors)"
        )
    if args.checkpoint is None:
        log.warning(
            "no --checkpoint: %s has random weights; the embeddings only test the pipeline",
            args.model,
        )
    return create_model(args.model, pretrained=args.checkpoint), args.model


def _options(args: argparse.Namespace) -> EmbedOptions:
    """The command line (``--config``, flags, ``--set``) as typed :class:`EmbedOptions`, with the
    ``auto`` device, precision and reader count resolved."""

    def resolve(given: dict[str, Any]) -> dict[str, Any]:
        device = _device(str(given.get("device", "auto")))
        auto = {
            "readers": 2 if device == "cpu" else min(8, os.cpu_count() or 2),
            "progress": sys.stderr.isatty(),
        }
        out = {**auto, **given, "device": device}
        if out.get("precision", "auto") == "auto":
            out["precision"] = "bf16" if device.startswith("cuda") else "fp32"
        return out

    return settings_from_args(args, EmbedOptions, _FLAGS, resolve)


def _summary(rep) -> str:  # rep: EmbedReport
    rate = rep.pixels_per_second if rep.computed else 0.0
    sets = ""
    if set(rep.sensor_patches) - {"+".join(rep.sensors)}:  # pixels without every sensor
        sets = "; pixels by sensors: " + ", ".join(
            f"{k} {n}" for k, n in sorted(rep.sensor_patches.items())
        )
    return (
        f"{rep.out}: {rep.status}; {rep.windows} windows ({rep.computed} computed, {rep.skipped} nodata, "
        f"{rep.resumed} resumed, {rep.recomputed} recomputed) in {rep.seconds:.1f} s"
        + (f", {rate:,.0f} scene px/s" if rate else "")
        + sets
    )


def run(args: argparse.Namespace) -> int:
    from terrafm.embed import EmbedInterrupted, embed_scene
    from terrafm.embed.scenes import embed_scenes, read_scene_list
    from terrafm.errors import TerraFMError

    make = _specs(args)
    single = bool(args.input) or bool(args.out)
    if single == bool(args.scene_list):
        raise SystemExit("error: give either --input ... --out FILE.tif, or --scene-list FILE.csv")
    if single and not (args.input and args.out):
        raise SystemExit("error: --input and --out go together")
    opts = _options(args)
    model, name = _model(args)
    try:
        if single:
            specs = [make(k, v) for k, v in _pairs(args.input, "--input").items()]
            rep = embed_scene(
                model,
                specs,
                args.out,
                table=args.table,
                preview=args.preview,
                options=opts,
                model_name=name,
                checkpoint=args.checkpoint,
                max_windows=args.max_windows,
            )
            print(_summary(rep))
            return 0
        rank = args.rank if args.rank is not None else int(os.environ.get("RANK", 0))
        world = (
            args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
        )
        jobs = read_scene_list(args.scene_list, make)
        res = embed_scenes(
            model,
            jobs,
            opts,
            rank=rank,
            world_size=world,
            model_name=name,
            checkpoint=args.checkpoint,
            fail_fast=args.fail_fast,
        )
        for rep in res.reports:
            print(_summary(rep))
        for out, err in res.failed:
            print(f"{out}: FAILED: {err}", file=sys.stderr)
        print(f"rank {rank}/{world}: {len(res.reports)} scene(s) done, {len(res.failed)} failed")
        return 1 if res.failed else 0
    except EmbedInterrupted as e:
        print(
            f"{_summary(e.report)}\ninterrupted: rerun the same command to resume", file=sys.stderr
        )
        return 130
    except ValueError as e:
        if isinstance(e, TerraFMError):
            raise  # reported once by terrafm.cli
        print(f"terrafm embed: error: {e}", file=sys.stderr)
        return 1
