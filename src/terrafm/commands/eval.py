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
a report already there is refused unless ``--overwrite`` (docs/errors.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT_FILES = ("result.json", "report.md")  # what terrafm.eval.report.write_report writes


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
    what.add_argument("--label-fraction", type=float, help="seeded fraction of training labels")
    what.add_argument("--shots", type=int, help="training samples per class (kNN / linear)")
    model = p.add_argument_group("model")
    model.add_argument("--model", help="variant (terrafm_tiny/small/base/large); default from a "
                       ".safetensors checkpoint, else terrafm_base")  # fmt: skip
    model.add_argument("--checkpoint", help="published .pth or terrafm .safetensors weights")
    how = p.add_argument_group("protocol settings (default: the published protocol)")
    how.add_argument("--normalization", choices=("model", "benchmark", "dataset"))
    how.add_argument("--image-size", type=int, help="input size, a multiple of 16")
    how.add_argument("--epochs", type=int)
    how.add_argument("--batch-size", type=int)
    how.add_argument(
        "--lr", type=float, nargs="+", help="learning rate; several = fine-tuning sweep on val"
    )
    how.add_argument("--weight-decay", type=float)
    how.add_argument("--layer-decay", type=float, help="fine-tuning layer-wise lr decay")
    how.add_argument("--pooling", choices=("cls", "mean", "cls+mean"), default="cls")
    how.add_argument(
        "--k", type=int, nargs="+", default=[20, 5], help="kNN neighbours (first = headline)"
    )
    how.add_argument(
        "--flips", action="store_true", help="linear probe: flip augmentation via 4 feature views"
    )
    how.add_argument("--tile", type=int, default=64, help="seg-linear tile size")
    how.add_argument("--channels", type=int, default=512, help="UPerNet channels")
    how.add_argument("--seed", type=int, default=0)
    run = p.add_argument_group("running")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    run.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="autocast dtype for the encoder"
    )
    run.add_argument("--workers", type=int, default=0, help="data-loading processes")
    run.add_argument("--cache-dir", help="feature cache folder (default: <out>/features)")
    run.add_argument("--no-cache", action="store_true", help="do not cache features")
    run.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable samples (counted, logged)"
    )
    run.add_argument(
        "--max-skipped",
        type=float,
        default=0.01,
        help="with --skip-bad: the fraction of unreadable samples a split may have (default 0.01)",
    )
    run.add_argument(
        "--missing-sensor",
        choices=("fuse-available", "error"),
        default="fuse-available",
        help="fused sensors: a sample lacking one is embedded from those it has, or is an error",
    )
    run.add_argument("--fail-fast", action="store_true", help="suite: stop at the first failed row")
    run.add_argument("--out", help="output folder (default runs/eval/<name>)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report (result.json, report.md) already in --out",
    )
    run.add_argument("--no-progress", action="store_true")


def _model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import torch

    from terrafm.models import create_model, load_model
    from terrafm.weights.checkpoint import read_metadata

    torch.manual_seed(args.seed)
    ckpt = args.checkpoint
    if ckpt and ckpt.endswith(".safetensors") and not args.model:
        return load_model(ckpt), {"name": read_metadata(ckpt).get("model_name"), "weights": ckpt}
    name = args.model or "terrafm_base"
    model = create_model(name, pretrained=ckpt)
    weights = ckpt or f"random initialisation (seed {args.seed}): no checkpoint given"
    return model, {"name": name, "weights": weights}


def _settings(args: argparse.Namespace) -> Any:
    import torch

    from terrafm.eval.runner import EvalSettings

    out = Path(args.out)
    lr = args.lr or []
    return EvalSettings(
        normalization=args.normalization, image_size=args.image_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=lr[0] if len(lr) == 1 else None, lrs=lr if len(lr) > 1 else None,
        weight_decay=args.weight_decay, layer_decay=args.layer_decay, pooling=args.pooling, ks=tuple(args.k),
        label_fraction=args.label_fraction, shots=args.shots, flips=args.flips, tile=args.tile,
        channels=args.channels, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        dtype=args.dtype, cache_dir=None if args.no_cache else (args.cache_dir or str(out / "features")),
        num_workers=args.workers, on_error="skip" if args.skip_bad else "raise", seed=args.seed,
        missing_sensor=args.missing_sensor, max_skipped=args.max_skipped,
        progress=not args.no_progress,
    )  # fmt: skip


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
    # Before the model is loaded or any feature computed: another run's report stays unless
    # --overwrite (its feature cache in --out is reused either way), and --out can be written.
    if not args.overwrite:
        refuse_existing(("--out", Path(args.out) / name) for name in REPORT_FILES)
    check_writable(args.out, "--out", folder=True)
    model, info = _model(args)
    settings = _settings(args)
    if args.suite:
        results = run_suite(args.suite, model, args.data_root, settings, fail_fast=args.fail_fast)
        title = f"TerraFM evaluation: suite {args.suite}"
    else:
        task = load_task(args.benchmark, args.task, args.data_root, image_size=args.image_size)
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
        if "error" in r:
            print(f"{r['benchmark']}/{r['task']} {r['protocol']}: FAILED {r['error']}")
        else:
            sensors = "+".join(r["sensors"])
            print(
                f"{r['benchmark']}/{r['task']} {r['protocol']} [{sensors}] {r['primary']} = {r['metrics'][r['primary']]:.2f}"
            )
    print(f"wrote {json_path} and {md_path}")
    return 1 if any("error" in r for r in results) else 0
