"""``terrafm eval``: run an evaluation protocol (or a whole published table) and write a report.

Examples::

    terrafm eval --benchmark geobench --task m-eurosat --data-root /data/geobench \\
        --protocol knn --model terrafm_base --checkpoint TerraFM-B.pth --partition 0.01x_train
    terrafm eval --benchmark copernicus --task bigearthnet_s1s2 --data-root /data/copernicusbench \\
        --protocol linear --sensors s1 s2_l2a s1,s2_l2a      # each sensor alone, then fused
    terrafm eval --benchmark folder --task landcover_cls --data-root world/tasks \
        --protocol retrieval --sensors s1 s2_l2a             # S1 query -> S2 gallery, and back
    terrafm eval --suite geobench-knn --data-root /data/geobench --checkpoint TerraFM-B.pth

Each run writes ``result.json`` and ``report.md`` (numbers beside the published ones) to ``--out``;
a report already there is refused unless ``--overwrite`` (docs/errors.md). The protocol and running
settings are :class:`terrafm.eval.runner.EvalSettings`: from the flags below, a YAML file
(``--config``) or ``--set KEY=VALUE`` (docs/design.md, "Configuration").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from terrafm.config import Flag, add_settings_arguments, settings_from_args
from terrafm.eval.runner import EvalSettings

log = logging.getLogger(__name__)

REPORT_FILES = ("result.json", "report.md")  # what terrafm.eval.report.write_report writes


def _lrs(values: list[float]) -> dict[str, Any]:
    """``--lr``: one rate, or several for the fine-tuning sweep."""
    return {"lr": values[0]} if len(values) == 1 else {"lrs": list(values)}


# EvalSettings fields as flags (the mapping of the command line onto the settings, in one place).
_WHAT = (
    Flag("label_fraction", help="seeded fraction of training labels"),
    Flag("shots", help="training samples per class (kNN / linear)"),
)
_HOW = (
    Flag("normalization", kwargs={"choices": ("model", "benchmark", "dataset")}),
    Flag("image_size", help="input size, a multiple of 16"),
    Flag("epochs"),
    Flag("batch_size"),
    Flag(
        flag="--lr",
        help="learning rate; several = fine-tuning sweep on val",
        to=_lrs,
        kwargs={"type": float, "nargs": "+"},
    ),
    Flag("weight_decay"),
    Flag("layer_decay", help="fine-tuning layer-wise lr decay"),
    Flag("pooling", kwargs={"choices": ("cls", "mean", "cls+mean")}),
    Flag("ks", flag="--k", help="kNN neighbours (first = headline)"),
    Flag("flips", help="linear probe: flip augmentation via 4 feature views"),
    Flag("tile", help="seg-linear tile size"),
    Flag("channels", help="UPerNet channels"),
    Flag("seed"),
)
_RUNNING = (
    Flag("device", help="cpu, cuda, cuda:1 ... (default: cuda if available)"),
    Flag(
        "dtype", help="autocast dtype for the encoder", kwargs={"choices": ("float32", "bfloat16")}
    ),
    Flag("num_workers", flag="--workers", help="data-loading processes"),
    Flag("cache_dir", help="feature cache folder (default: <out>/features)"),
    Flag(
        flag="--no-cache",
        help="do not cache features",
        to=lambda given: {"cache_dir": None},
        kwargs={"action": "store_true"},
    ),
    Flag(
        flag="--skip-bad",
        help="skip unreadable samples (counted, logged)",
        to=lambda given: {"on_error": "skip"},
        kwargs={"action": "store_true"},
    ),
    Flag(
        "max_skipped", help="with --skip-bad: the fraction of unreadable samples a split may have"
    ),
    Flag(
        "missing_sensor",
        help="fused sensors: a sample lacking one is embedded from those it has, or is an error",
        kwargs={"choices": ("fuse-available", "error")},
    ),
    Flag("progress", help="progress bars"),
)
_FLAGS = (*_WHAT, *_HOW, *_RUNNING)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from terrafm.eval.datasets import BENCHMARKS
    from terrafm.eval.runner import PROTOCOLS
    from terrafm.eval.suite import SUITES

    what = p.add_argument_group("what to evaluate")
    what.add_argument("--benchmark", choices=BENCHMARKS, help="benchmark reader")
    what.add_argument(
        "--task", help="task name (e.g. m-eurosat, cloud_s2); a sub-folder for 'folder'"
    )
    what.add_argument(
        "--data-root", required=True, help="the benchmark's root folder as distributed"
    )
    what.add_argument("--protocol", choices=PROTOCOLS, help="evaluation protocol")
    what.add_argument("--suite", choices=sorted(SUITES), help="run a whole published table instead")
    what.add_argument(
        "--sensors", nargs="+", metavar="S[,S]",
        help="sensor groups, each run separately; a comma joins sensors into one fused input "
        "(e.g. --sensors s1 s2_l2a s1,s2_l2a); default: the task's published choice. "
        "retrieval: two groups, query then gallery (default: s1 and the task's S2 product)",
    )  # fmt: skip
    what.add_argument("--partition", help="named training partition, e.g. 0.01x_train (GEO-Bench)")
    add_settings_arguments(what, EvalSettings, _WHAT, config_flags=False)
    model = p.add_argument_group("model")
    model.add_argument("--model", help="variant (terrafm_tiny/small/base/large); default from a "
                       ".safetensors checkpoint, else terrafm_base")  # fmt: skip
    model.add_argument("--checkpoint", help="published .pth or terrafm .safetensors weights")
    how = p.add_argument_group(
        "protocol settings (default: the published protocol); any EvalSettings field also "
        "from --config FILE (YAML) or --set KEY=VALUE"
    )
    add_settings_arguments(how, EvalSettings, _HOW)
    run = p.add_argument_group("running")
    add_settings_arguments(run, EvalSettings, _RUNNING, config_flags=False)
    run.add_argument("--fail-fast", action="store_true", help="suite: stop at the first failed row")
    run.add_argument("--out", help="output folder (default runs/eval/<name>)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report (result.json, report.md) already in --out",
    )


def _model(args: argparse.Namespace, seed: int) -> tuple[Any, dict[str, Any]]:
    import torch

    from terrafm.models import create_model, load_model
    from terrafm.weights.checkpoint import read_metadata

    torch.manual_seed(seed)
    ckpt = args.checkpoint
    if ckpt and ckpt.endswith(".safetensors") and not args.model:
        return load_model(ckpt), {"name": read_metadata(ckpt).get("model_name"), "weights": ckpt}
    name = args.model or "terrafm_base"
    model = create_model(name, pretrained=ckpt)
    weights = ckpt or f"random initialisation (seed {seed}): no checkpoint given"
    return model, {"name": name, "weights": weights}


def _settings(args: argparse.Namespace) -> EvalSettings:
    """The command line (``--config``, flags, ``--set``) as typed :class:`EvalSettings`."""

    def resolve(given: dict[str, Any]) -> dict[str, Any]:
        import torch

        auto = {
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cache_dir": str(Path(args.out) / "features"),
        }
        return {**auto, **given}

    return settings_from_args(args, EvalSettings, _FLAGS, resolve)


def run(args: argparse.Namespace) -> int:
    from terrafm.eval.datasets import load_task
    from terrafm.eval.report import write_report
    from terrafm.eval.runner import evaluate
    from terrafm.eval.suite import run_suite
    from terrafm.outputs import check_writable, refuse_existing

    if not args.suite and not (args.benchmark and args.protocol):
        raise SystemExit("terrafm eval: give --benchmark and --protocol (and --task), or --suite")
    label = args.suite or f"{args.benchmark}-{args.task or 'task'}-{args.protocol}"
    args.out = args.out or str(Path("runs") / "eval" / label)
    settings = _settings(args)
    # Before the model is loaded or any feature computed: another run's report stays unless
    # --overwrite (its feature cache in --out is reused either way), and --out can be written.
    if not args.overwrite:
        refuse_existing(("--out", Path(args.out) / name) for name in REPORT_FILES)
    check_writable(args.out, "--out", folder=True)
    model, info = _model(args, settings.seed)
    if args.suite:
        results = run_suite(args.suite, model, args.data_root, settings, fail_fast=args.fail_fast)
        title = f"TerraFM evaluation: suite {args.suite}"
    else:
        task = load_task(args.benchmark, args.task, args.data_root, image_size=settings.image_size)
        groups = args.sensors or [None]
        if args.protocol == "retrieval":  # one run: the query group, then the gallery group
            groups = [args.sensors] if args.sensors else [None]
        results = [
            evaluate(model, task, args.protocol, g, partition=args.partition, settings=settings)
            for g in groups
        ]
        title = f"TerraFM evaluation: {task.title}, {args.protocol}"
    json_path, md_path = write_report(results, args.out, title, info)
    for r in results:
        if r.failed:
            print(f"{r.benchmark}/{r.task} {r.protocol}: FAILED {r.error}")
        else:
            sensors = "+".join(r.sensors)
            print(
                f"{r.benchmark}/{r.task} {r.protocol} [{sensors}] {r.primary} = {r.primary_value:.2f}"
            )
    print(f"wrote {json_path} and {md_path}")
    return 1 if any(r.failed for r in results) else 0
