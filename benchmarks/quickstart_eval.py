"""Time the quickstart's evaluation stages on a finished quickstart run, and keep their numbers.

Runs what ``terrafm quickstart`` runs after pretraining (stage ``evaluate``: the pretrained and the
random-init encoder on S1, S2 L2A and fused, retrieval and missing-sensor kNN; stage ``controls``:
raw pixels and the patch-majority ceiling) on the world and encoder of an existing run folder,
prints the seconds of each stage and writes every number to ``--json``:

    .venv/bin/python benchmarks/quickstart_eval.py runs/quickstart --json /tmp/eval.json \\
        [--compare /tmp/eval-before.json] [--upernet-epochs 1]

``--compare`` checks that every number (times left out) equals those of an earlier ``--json``: the
same encoder, seed and probes must give the same figures. ``--upernet-epochs N`` also times N
epochs of the UPerNet head on four blocks (``seg-upernet``, the pretrained encoder on S2 L2A) and
extrapolates its CPU time to the probes' epochs for both encoders.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def _strip_times(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a quickstart output folder (world/, pretrain/full/)")
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", default="full", help="pretrain/<variant> folder")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--compare", type=Path, help="an earlier --json to compare with")
    ap.add_argument(
        "--upernet-epochs", type=int, default=0,
        help="also time N epochs of the UPerNet probe (pretrained encoder, S2 L2A)",
    )  # fmt: skip
    ap.add_argument("--only-upernet", action="store_true", help="skip the two stages")
    args = ap.parse_args()

    import torch

    from terrafm.config import PretrainConfig, load_config
    from terrafm.quickstart.pipeline import (
        PretrainRun,
        evaluate_models,
        evaluate_models_controls,
    )
    from terrafm.quickstart.presets import get_preset

    p = get_preset(args.preset)
    pre = args.run / "pretrain" / args.variant
    cfg = load_config(PretrainConfig, pre / "config.yaml")
    run = PretrainRun(pre, pre / "encoder.safetensors", [], 0, True)
    torch.set_num_threads(p.threads)
    times: dict[str, float] = {}
    record: dict[str, Any] = {}
    if not args.only_upernet:
        t0 = time.perf_counter()
        cross: dict[str, Any] = {}
        results = evaluate_models(args.run / "world", cfg, run, p, args.seed, cross)
        times["evaluate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        controls = evaluate_models_controls(args.run / "world", p, args.seed)
        times["controls"] = time.perf_counter() - t0
        record.update(results=results, cross_sensor=cross, controls=controls)
    if args.upernet_epochs:
        import resource

        from terrafm.eval import load_task
        from terrafm.eval.runner import Evaluator
        from terrafm.models import load_model
        from terrafm.quickstart.evaluate import probe_settings

        seg = load_task("folder", "landcover_seg", args.run / "world" / "tasks")
        ev = Evaluator(load_model(run.encoder).eval(), seg, probe_settings(p.probes, args.seed))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        up = ev.run("seg-upernet", "s2_l2a", epochs=args.upernet_epochs)
        times["upernet"] = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        full = cpu / args.upernet_epochs * p.probes.seg_epochs * 2
        record["upernet"] = {"epochs": args.upernet_epochs, "miou": up.primary_value,
                             "wall_seconds": times["upernet"], "cpu_seconds": cpu,
                             "cpu_seconds_full_both_encoders": full}  # fmt: skip
        print(f"UPerNet, S2 L2A, pretrained encoder, {args.upernet_epochs} epoch(s): "
              f"{times['upernet']:.1f} s wall, {cpu:.1f} s CPU, mIoU {up.primary_value:.1f}; "
              f"{p.probes.seg_epochs} epochs x 2 encoders ~ {full:.0f} CPU s")  # fmt: skip
    print("| stage | seconds |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {v:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"seconds": times, **record}, indent=1, default=str))
    if args.compare:
        before = json.loads(args.compare.read_text())
        now = json.loads(json.dumps(record, default=str))
        keys = [k for k in ("results", "cross_sensor", "controls") if k in before]
        diffs = _diff(
            _strip_times({k: before[k] for k in keys}), _strip_times({k: now[k] for k in keys})
        )
        print(f"compared with {args.compare}: {len(diffs)} differences")
        for d in diffs[:30]:
            print("  " + d)
        if "seconds" in before:
            for k, v in before["seconds"].items():
                if k in times:
                    print(
                        f"| {k} before | {v:.1f} | now | {times[k]:.1f} | ratio {times[k] / v:.2f} |"
                    )
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
