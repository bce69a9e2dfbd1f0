"""Inference throughput of TerraFM: a straightforward implementation vs terrafm's, side by side.

Prints images/s and peak memory (RSS of a fresh process per configuration) for TerraFM-B at 224 x 224,
batch 8, S2-L2A input, in float32 and bfloat16 autocast, plus the largest output difference from the
straightforward float32 result. Configurations are measured in interleaved rounds so that machine
noise hits them alike; the table reports the median round.

    .venv/bin/python benchmarks/inference.py [--model terrafm_base] [--batch 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGS = [
    ("straightforward", "float32"),
    ("terrafm", "float32"),
    ("straightforward", "bfloat16"),
    ("terrafm", "bfloat16"),
]
ARCH = {
    "terrafm_tiny": (96, 4, 3),
    "terrafm_small": (384, 12, 6),
    "terrafm_base": (768, 12, 12),
    "terrafm_large": (1024, 24, 16),
}


def _models(name: str):
    import terrafm
    from terrafm.models.reference import ReferenceTerraFM

    torch.manual_seed(0)
    ours = terrafm.create_model(name).eval()
    for k in ("s1", "s2_l1c", "s2_l2a"):  # non-trivial modality vectors
        torch.nn.init.normal_(ours.patch_embed.modality_embed(k), std=0.02)
    ref = ReferenceTerraFM(*ARCH[name]).eval()
    state = {k: v for k, v in ours.state_dict().items() if k in ref.state_dict()}
    ref.load_state_dict(state, strict=True)
    return ours, ref


def worker(impl: str, dtype: str, name: str, batch: int, iters: int) -> dict[str, float]:
    """Time one configuration in this process; returns images/s, peak RSS and the output."""
    ours, ref = _models(name)
    x = torch.randn(batch, 12, 224, 224, generator=torch.Generator().manual_seed(1))

    def run() -> torch.Tensor:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"),
        ):
            if impl == "terrafm":
                return ours({"s2_l2a": x})
            return ref(x, "s2_l2a")

    out = run()  # warm-up (and the fast path's weight folding)
    run()
    t0 = time.perf_counter()
    for _ in range(iters):
        run()
    dt = time.perf_counter() - t0
    with torch.inference_mode():
        baseline = ref(x, "s2_l2a")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    return {
        "ips": batch * iters / dt,
        "peak_mib": peak,
        "max_diff": float((out.float() - baseline).abs().max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="terrafm_base", choices=sorted(ARCH))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=3, help="timed forward passes per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.model, a.batch, a.iters)))
        return
    results: dict[tuple[str, str], list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for r in range(a.rounds):
        for impl, dtype in CONFIGS:
            cmd = [sys.executable, __file__, "--worker", impl, dtype, "--model", a.model]
            cmd += ["--batch", str(a.batch), "--iters", str(a.iters)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[(impl, dtype)].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    base = statistics.median(x["ips"] for x in results[("straightforward", "float32")])
    print(
        f"\n{a.model}, 224 x 224, batch {a.batch}, S2-L2A, {torch.get_num_threads()} threads, "
        f"median of {a.rounds} interleaved rounds x {a.iters} passes"
    )
    print(
        "| implementation | dtype | images/s | vs straightforward fp32 | peak RSS MiB | max abs diff vs fp32 ref |"
    )
    print("|---|---|---|---|---|---|")
    for impl, dtype in CONFIGS:
        rs = results[(impl, dtype)]
        ips = statistics.median(x["ips"] for x in rs)
        peak = max(x["peak_mib"] for x in rs)
        diff = max(x["max_diff"] for x in rs)
        print(f"| {impl} | {dtype} | {ips:.2f} | {ips / base:.2f}x | {peak:.0f} | {diff:.2e} |")
    # per-round ratios measured side by side
    ratios = [
        o["ips"] / s["ips"]
        for o, s in zip(results[("terrafm", "float32")], results[("straightforward", "float32")])
    ]
    print(f"\nterrafm/straightforward fp32 per round: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
