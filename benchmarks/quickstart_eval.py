"""Time the quickstart's evaluation stages on a finished quickstart run, and keep their numbers.

Runs what ``terrafm quickstart`` runs after pretraining (stage ``evaluate``: the pretrained and the
random-init encoder on S1, S2 L2A and fused, retrieval and missing-sensor kNN; stage ``controls``:
raw pixels and the patch-majority ceiling) on the world and encoder of an existing run folder,
prints the seconds of each stage and writes every number to ``--json``:

    .venv/bin/python benchmarks/quickstart_eval.py runs/quickstart --json /tmp/eval.json \\
        [--compare /tmp/eval-before.json] [--upernet-chips 64 --only-upernet]

``--compare`` checks that every number (times left out) equals those of an earlier ``--json``: the
same encoder, seed and probes must give the same figures. ``--upernet-chips N`` also times one
training epoch of the ``seg-upernet`` head on four blocks (its published settings: batch 16, 512
channels; the pretrained encoder on S2 L2A) on N chips, and extrapolates its CPU time to the
whole training split, the probes' epochs and both encoders.
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
        "--upernet-chips", type=int, default=0,
        help="also time one UPerNet training epoch on N chips (pretrained encoder, S2 L2A)",
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
    if args.upernet_chips:
        import resource

        from terrafm.eval import load_task
        from terrafm.eval.segmentation import SegSettings, train_upernet
        from terrafm.models import load_model

        seg = load_task("folder", "landcover_seg", args.run / "world" / "tasks")
        train = seg.dataset("train", ("s2_l2a",))
        chips = min(args.upernet_chips, len(train))
        # the protocol's head and optimiser (batch 16, 512 channels), one epoch on a few chips
        settings = SegSettings(1, 16, 1e-3, 0.01, seed=args.seed, channels=512)
        encoder = load_model(run.encoder).eval()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        train_upernet(encoder, train.select(list(range(chips))), settings, "cpu", False)
        times["upernet"] = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
        full = cpu / chips * len(train) * p.probes.seg_epochs * 2
        record["upernet"] = {"chips": chips, "wall_seconds": times["upernet"], "cpu_seconds": cpu,
                             "train_cpu_seconds_both_encoders": full}  # fmt: skip
        print(f"UPerNet training, S2 L2A, {chips} chips x 1 epoch: {times['upernet']:.1f} s wall, "
              f"{cpu:.1f} s CPU; {len(train)} chips x {p.probes.seg_epochs} epochs x 2 encoders "
              f"~ {full:.0f} CPU s (training alone)")  # fmt: skip
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
