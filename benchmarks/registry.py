"""Cost of verified weight loading: sha256 throughput, the cache's sidecar fast path, the model
fingerprint, and the terratorch backbone's overhead over the bare encoder.

A file of ``--mib`` MiB is written to a temp folder, "downloaded" through a ``file://`` URL into a
cache (hash checked), then fetched again with a valid sidecar (no re-hash) and after touching the
file (re-hash). The published file sizes are computed from the model shapes (meta device, nothing
allocated) to project the cold verification time of TerraFM-B and TerraFM-L.

    .venv/bin/python benchmarks/registry.py [--mib 256] [--repeats 3] [--size 224] [--batch 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from terrafm.integrations.terratorch import TerraFMBackbone
from terrafm.models import create_model, model_config
from terrafm.weights.fetch import fetch_file, sha256_file
from terrafm.weights.fingerprint import model_fingerprint


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _published_bytes(name: str) -> int:
    """float32 bytes of the published state dict, from the config alone.

    Key table: docs/design.md, "Encoder and checkpoint layout".
    """
    c = model_config(name)
    d, a, p2 = c.embed_dim, 3 * c.embed_dim, c.patch_size**2
    grid = (c.img_size // c.patch_size) ** 2
    stem = sum(a * n * p2 + a for n in (12, 12, 2)) + 3 * a  # convs + biases + modality vectors
    proj = a * a + 2 * a + a * a + a + d * a + d  # proj1, norm_input, proj2, proj3
    mlp = int(c.mlp_ratio * d)
    block = 4 * d + 3 * d * d + 3 * d + d * d + d + d * mlp + mlp + mlp * d + d
    return 4 * (d + (1 + grid) * d + stem + proj + c.depth * block + 2 * d)


def _hash_rows(mib: int, repeats: int) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "weights.bin"
        with open(src, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        digest = sha256_file(src)
        url = src.as_uri()
        target = Path(d) / "cache" / "weights.bin"
        t_hash = _best(lambda: sha256_file(src), repeats)
        t0 = time.perf_counter()
        fetch_file(url, target, sha256=digest)
        t_download = time.perf_counter() - t0
        t_sidecar = _best(lambda: fetch_file(url, target, sha256=digest), repeats)

        def touched() -> None:
            os.utime(target)
            fetch_file(url, target, sha256=digest)

        t_touched = _best(touched, repeats)
    rate = mib / t_hash
    rows = [
        (f"sha256 of {mib} MiB", f"{t_hash * 1e3:8.1f} ms  ({rate:,.0f} MiB/s)"),
        ("file:// download + verify + rename", f"{t_download * 1e3:8.1f} ms"),
        ("cached fetch, sidecar valid", f"{t_sidecar * 1e3:8.3f} ms"),
        ("cached fetch after touch (re-hash)", f"{t_touched * 1e3:8.1f} ms"),
    ]
    for name, label in (("terrafm_base", "TerraFM-B"), ("terrafm_large", "TerraFM-L")):
        size = _published_bytes(name) / 2**20
        rows.append((f"{label} file {size:,.0f} MiB: cold verify", f"{size / rate:8.2f} s"))
    return rows


def _backbone_rows(size: int, batch: int, repeats: int) -> list[tuple[str, str]]:
    torch.manual_seed(0)
    model = create_model("terrafm_base").eval()
    x = torch.randn(batch, 12, size, size)
    n = model.dense_layers
    with torch.inference_mode():
        t_enc = _best(lambda: model.get_intermediate_layers({"s2_l2a": x}, n=n), repeats)
        tokens = TerraFMBackbone(model)
        maps = TerraFMBackbone(model, output="maps")
        t_tok = _best(lambda: tokens(x), repeats)
        t_map = _best(lambda: maps(x), repeats)
    t_fp = _best(lambda: model_fingerprint(model), repeats)
    shape = f"terrafm_base, {batch}x12x{size}x{size}, CPU {torch.get_num_threads()} thr"
    return [
        ("model_fingerprint(terrafm_base) (feature cache, embed resume)", f"{t_fp * 1e3:8.1f} ms"),
        (f"encoder.get_intermediate_layers ({shape})", f"{t_enc * 1e3:8.1f} ms"),
        ("TerraFMBackbone tokens", f"{t_tok * 1e3:8.1f} ms  ({t_tok / t_enc - 1:+.1%})"),
        ("TerraFMBackbone maps", f"{t_map * 1e3:8.1f} ms  ({t_map / t_enc - 1:+.1%})"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--skip-backbone", action="store_true")
    args = p.parse_args()
    rows = _hash_rows(args.mib, args.repeats)
    if not args.skip_backbone:
        rows += _backbone_rows(args.size, args.batch, args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':{width}s}  time")
    print("-" * (width + 24))
    for name, value in rows:
        print(f"{name:{width}s}  {value}")


if __name__ == "__main__":
    main()
