"""``terrafm quickstart``: world -> pretraining -> evaluation -> report on the built-in world.

The README's main command; see ``docs/quickstart.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("terrafm.quickstart")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default runs/quickstart, or runs/quickstart-no_<components> with "
        "--ablate)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the world, pretraining and probes")
    p.add_argument(
        "--preset",
        default="quickstart",
        help="quickstart (15 min on 2 CPU cores) or micro (seconds, a smoke test)",
    )
    p.add_argument(
        "--ablate",
        default="",
        help="comma-separated components to switch off in pretraining: "
        "fusion, modality_aug, dual_centering",
    )
    p.add_argument(
        "--ablation-table",
        action="store_true",
        help="instead, pretrain and evaluate the paper's component-ablation rows and the rows "
        "beyond the paper (masked patch distillation, + KoLeo, photometric jitter; about 7x the "
        "quickstart's pretraining) and write ablation.md",
    )
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report of another run (other seed, preset or --ablate) in --out",
    )


def _out(args: argparse.Namespace, ablate: list[str]) -> Path:
    if args.out:
        return Path(args.out)
    if ablate and not args.ablation_table:
        return Path("runs") / ("quickstart-no_" + "+".join(sorted(ablate)))
    return Path("runs/quickstart")


# Per-sample data warnings (a cloudy tile skipped, ...) go to the log file, not the console.
_NOISY = ("terrafm.data", "terrafm.ssl.data")


def _quiet(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not record.name.startswith(_NOISY)


def _log_to_file(out: Path) -> logging.Handler:
    """Everything at INFO and above into ``out/quickstart.log``; the console keeps the rest."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "quickstart.log", mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in root.handlers:
        if type(h) is logging.StreamHandler and _quiet not in h.filters:
            h.addFilter(_quiet)
    root.addHandler(handler)
    return handler


def _refuse_other_report(args: argparse.Namespace, ablate: list[str], out: Path) -> None:
    """A finished report in ``out`` is this command's to rewrite only if it is the same run (seed,
    preset, ablation): a rerun continues it, reusing its world and pretraining. Another run's
    report, or one whose run is unknown, is refused unless ``--overwrite``."""
    from terrafm.errors import OutputError
    from terrafm.outputs import refuse_existing

    table = args.ablation_table
    record, report = ("ablation.json", "ablation.md") if table else ("summary.json", "report.md")
    keys = ("seed", "preset") if table else ("seed", "preset", "ablate")
    ours = {"seed": args.seed, "preset": args.preset, "ablate": sorted(ablate)}
    if not (out / record).is_file():
        refuse_existing([("--out", out / report)])  # a report without its record: not ours
        return
    try:
        saved = json.loads((out / record).read_text())
        theirs = {k: sorted(saved[k]) if k == "ablate" else saved[k] for k in keys}
    except (OSError, ValueError, TypeError, KeyError):
        theirs = None
    if theirs == {k: ours[k] for k in keys}:
        return
    run = ", ".join(f"{k} {v}" for k, v in theirs.items()) if theirs else "unreadable"
    raise OutputError(
        f"--out {out / record} is the report of another run ({run}); pass --overwrite to "
        "replace it, or choose another --out"
    )


def run(args: argparse.Namespace) -> int:
    from terrafm.outputs import check_writable
    from terrafm.quickstart.pipeline import check_ablate
    from terrafm.quickstart.presets import get_preset

    ablate = [a.strip() for a in args.ablate.split(",") if a.strip()]
    out = _out(args, ablate)
    if args.ablation_table and ablate:
        log.error("--ablation-table runs every row itself; drop --ablate")
        return 2
    try:  # check the arguments before anything is written
        get_preset(args.preset)
        check_ablate(ablate)
    except ValueError as e:
        log.error("%s", e)
        return 2
    if not args.overwrite:  # before the world, pretraining or log file is touched
        _refuse_other_report(args, ablate, out)
    check_writable(out, "--out", folder=True)
    handler = _log_to_file(out)
    try:
        return _run(args, ablate, out)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(args: argparse.Namespace, ablate: list[str], out: Path) -> int:
    from terrafm.config import ConfigError
    from terrafm.quickstart.ablation import run_ablation_table
    from terrafm.quickstart.pipeline import run_quickstart
    from terrafm.world.generate import WorldError

    try:
        if args.ablation_table:
            record = run_ablation_table(
                out, seed=args.seed, preset=args.preset, progress=args.progress
            )
            print((out / "ablation.md").read_text())
            print(f"wrote {out / 'ablation.md'} ({record['timing']['wall_seconds']:.0f} s)")
            return 0
        s = run_quickstart(
            out, seed=args.seed, preset=args.preset, ablate=ablate, progress=args.progress
        )
    except (ValueError, ConfigError, WorldError) as e:
        log.error("%s", e)
        return 2
    a = s["acceptance"]
    print(f"\nTerraFM quickstart ({s['preset']}, seed {s['seed']}) -> {out}/report.md")
    print(f"  kNN top-1, 1 % labels, S2:   pretrained {s['knn_top1_pretrained']:.1f}  "
          f"random {s['knn_top1_random']:.1f}")  # fmt: skip
    print(f"  segmentation mIoU, S2:       pretrained {s['miou_pretrained']:.1f}  "
          f"random {s['miou_random']:.1f}")  # fmt: skip
    print(f"  kNN top-1, 1 %, S1+S2 fused: pretrained {s['knn_top1_fused_pretrained']:.1f}  "
          f"random {s['knn_top1_fused_random']:.1f}")  # fmt: skip
    if "retrieval_r1_s1_to_s2_pretrained" in s:
        print(f"  retrieval R@1, S1 -> S2:     pretrained {s['retrieval_r1_s1_to_s2_pretrained']:.1f}  "
              f"random {s['retrieval_r1_s1_to_s2_random']:.1f}  "
              f"chance {s['retrieval_chance_r1']:.1f}")  # fmt: skip
    print(f"  wall time {s['wall_seconds']:.0f} s (load average {s['timing']['load_average_end']})")
    for check, ok in a["passed"].items():
        print(f"  [{'pass' if ok else 'FAIL'}] {check}")
    return 0
