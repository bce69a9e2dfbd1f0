"""Search index kinds at 10^5 and 10^6 vectors of TerraFM-B's width (768): build, memory, latency, recall.

For each size, synthetic unit vectors are drawn as embeddings are distributed: clusters of similar
windows (``--clusters`` centres with Gaussian spread, power-law spectrum) rather than uniform noise, which no
index can search well and no encoder produces. Each kind of ``terrafm search`` index is built the
way ``build_index`` builds it (same cell count, training sample and nprobe tuning to recall@10 >=
``--target``, tuned on indexed vectors), then measured on held-out query vectors of the same
distribution:

- build seconds (training + adding + nprobe tuning, ``--threads`` OpenMP threads; the k-means cells
  are trained once per size and their time is added to each IVF kind's build) and the bytes the
  index holds (vectors or codes, ids, coarse centroids);
- single-query latency p50 / p99 on one core (one query per call, as the CLI does);
- recall@10 against the exact (``flat``) answer for the same queries.

    .venv/bin/python benchmarks/search.py            # 1e5 and 1e6 (a few minutes on 2 cores)
    .venv/bin/python benchmarks/search.py --quick    # 1e5 only
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np

from terrafm.search.index import (
    EVAL_K,
    default_nlist,
    make_index,
    normalize,
    recall_at_k,
    train_size,
    tune_nprobe,
)

KINDS = ("flat", "ivf-flat", "ivf-sq8", "ivf-pq")


def index_bytes(index: faiss.Index) -> int:
    """Bytes the index holds: vectors or codes, their ids, and the coarse centroids."""
    if isinstance(index, faiss.IndexFlat):
        return index.ntotal * index.code_size
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    sizes = np.array([lists.list_size(i) for i in range(lists.nlist)])
    if isinstance(lists, faiss.BlockInvertedLists):  # fast-scan: codes in blocks of n_per_block
        codes = int((-(-sizes // lists.n_per_block)).sum()) * lists.block_size
    else:
        codes = int(sizes.sum()) * lists.code_size
    ids = int(sizes.sum()) * np.dtype(np.int64).itemsize
    return codes + ids + ivf.quantizer.ntotal * ivf.d * 4


def synthetic(n: int, dim: int, clusters: int, alpha: float, seed: int) -> np.ndarray:
    """``n`` unit vectors (float32): cluster centres plus noise of equal scale, both with a
    power-law spectrum (the i-th of ``dim`` random orthogonal directions has scale i^-alpha), as
    learned embeddings concentrate their variance in a few directions."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -alpha
    rot = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * scale
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        z = rng.standard_normal((e - s, dim), dtype=np.float32) * scale
        out[s:e] = normalize((centres[rng.integers(0, clusters, e - s)] + z) @ rot)
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ground truth by plain numpy matrix products, in chunks."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(x), 200_000):
        sims = q @ x[s : s + 200_000].T
        ids = np.broadcast_to(np.arange(s, s + sims.shape[1]), sims.shape)
        cs, ci = np.concatenate([best_s, sims], 1), np.concatenate([best_i, ids], 1)
        top = np.argpartition(-cs, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def train_cells(x: np.ndarray) -> tuple[faiss.Index, float]:
    """The coarse quantiser every IVF kind starts from, trained once per size as build_index
    trains it (same cell count and sample rule); returns it and its training seconds."""
    nlist = default_nlist(len(x))
    t0 = time.perf_counter()
    ivf = make_index("ivf-flat", x.shape[1], nlist)
    ivf.train(x[np.random.default_rng(1).choice(len(x), train_size(nlist), replace=False)])
    return faiss.clone_index(faiss.extract_index_ivf(ivf).quantizer), time.perf_counter() - t0


def bench_kind(kind, x, cells, tune_q, tune_truth, q, truth, target):
    """Build one kind (the shared cells' training time added to its build time) and measure it."""
    quantizer, cells_s = cells
    t0 = time.perf_counter()
    nprobe = None
    if kind == "flat":
        index = make_index(kind, x.shape[1], 0)
        cells_s = 0.0
    else:
        index = make_index(kind, x.shape[1], quantizer.ntotal)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer = faiss.clone_index(quantizer)  # trained: faiss then trains only the codes
        ivf.own_fields = True
        ivf.quantizer.this.disown()
        sample = x[np.random.default_rng(1).choice(len(x), train_size(ivf.nlist), replace=False)]
        index.train(sample)
        del sample
    index.add(x)
    if kind != "flat":
        nprobe, _ = tune_nprobe(index, tune_q, tune_truth, target, quantizer.ntotal)
    build = time.perf_counter() - t0 + cells_s
    mem = index_bytes(index)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # latency of one query on one core
    lat = []
    ids = np.zeros((len(q), EVAL_K), np.int64)
    for i in range(len(q)):
        t = time.perf_counter()
        _, found = index.search(q[i : i + 1], EVAL_K)
        lat.append(time.perf_counter() - t)
        ids[i] = found[0]
    faiss.omp_set_num_threads(threads)
    del index
    gc.collect()
    lat_ms = np.array(lat) * 1e3
    return {
        "kind": kind,
        "nlist": quantizer.ntotal if kind != "flat" else "-",
        "nprobe": nprobe or "-",
        "build_s": build,
        "mem_mib": mem / 2**20,
        "bytes_per_vec": mem / len(x),
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "recall": recall_at_k(ids, truth),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^5 vectors only")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.5, help="spectrum decay exponent")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--target", type=float, default=0.95, help="recall@10 the nprobe tuning aims at"
    )
    ap.add_argument("--threads", type=int, default=1, help="build threads (0: faiss default)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    sizes = [100_000] if args.quick else [int(float(s)) for s in args.sizes.split(",")]
    print(
        f"dim {args.dim}, {args.clusters} clusters, spectrum i^-{args.alpha}, {args.queries} held-out "
        f"queries, nprobe tuned to recall@10 >= {args.target}, {faiss.omp_get_max_threads()} threads"
    )
    head = "| N | kind | nlist | nprobe | build s | index MiB | B/vector | p50 ms | p99 ms | recall@10 |"
    rows = [head, "|" + "---|" * 10]
    for n in sizes:
        t = time.perf_counter()
        data = synthetic(n + 2 * args.queries, args.dim, args.clusters, args.alpha, seed=n)
        x, q = data[:n], data[n : n + args.queries]
        rng = np.random.default_rng(2)
        tune_q = x[rng.choice(n, args.queries, replace=False)]  # as build_index: indexed vectors
        truth, tune_truth = exact_topk(x, q, EVAL_K), exact_topk(x, tune_q, EVAL_K)
        print(f"N={n}: data and exact answers in {time.perf_counter() - t:.1f}s", flush=True)
        cells = train_cells(x)
        print(f"N={n}: {cells[0].ntotal} cells trained in {cells[1]:.1f}s", flush=True)
        for kind in args.kinds.split(","):
            r = bench_kind(kind, x, cells, tune_q, tune_truth, q, truth, args.target)
            rows.append(
                f"| {n:,} | {r['kind']} | {r['nlist']} | {r['nprobe']} | {r['build_s']:.1f} | "
                f"{r['mem_mib']:.0f} | {r['bytes_per_vec']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['recall']:.3f} |"
            )
            print(rows[-1], flush=True)
        del data, x, q
    print("\n".join(rows))


if __name__ == "__main__":
    main()
