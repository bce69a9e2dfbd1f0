"""Cross-sensor retrieval: find the same place seen by another sensor (docs/evaluation.md).

Every sample of a paired task (S1 and S2 of the same chip) is embedded twice: once from one sensor
group alone (the *query*, e.g. S1) and once from another (the *gallery*, e.g. S2 L2A). For each
query the gallery items are ranked by cosine similarity of the pooled embeddings; recall@k is the
share of queries whose own place (the gallery item of the same sample id) is among the k most
similar. Both directions are measured from the same embeddings (S1 -> S2 and S2 -> S1).

Ties are broken uniformly at random *in expectation*: with ``g`` gallery items strictly more
similar than the true match and ``t`` others exactly as similar, the match's rank is uniform on
``g .. g + t`` and its contribution to recall@k is ``clamp((k - g) / (t + 1), 0, 1)``. So an encoder
whose embeddings collapse to one point scores chance, ``k / N``, not 100 %.

Chance level for a gallery of ``N`` items with one match each is ``min(k, N) / N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["RETRIEVAL_KS", "chance_recall", "match_ids", "recall_at_k", "retrieval_metrics"]

RETRIEVAL_KS = (1, 5)


def recall_at_k(
    query: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = RETRIEVAL_KS, chunk: int = 1024
) -> dict[int, float]:
    """Recall@k in % of (N, D) queries against (N, D) gallery rows; query i's match is row i.

    Cosine similarity; ties broken uniformly at random in expectation (module docstring).
    """
    if query.ndim != 2 or gallery.ndim != 2 or query.shape != gallery.shape:
        raise ValueError(
            f"query and gallery must both be (N, D) with the same shape, got "
            f"{tuple(query.shape)} and {tuple(gallery.shape)}"
        )
    n = query.shape[0]
    if n == 0:
        raise ValueError("retrieval needs at least one query / gallery pair")
    if any(k < 1 for k in ks):
        raise ValueError(f"recall@k needs k >= 1, got {list(ks)}")
    g = F.normalize(gallery.double(), dim=1)
    hits = {k: torch.zeros((), dtype=torch.float64) for k in ks}
    for start in range(0, n, chunk):
        q = F.normalize(query[start : start + chunk].double(), dim=1)
        sims = q @ g.T  # (c, N)
        rows = torch.arange(q.shape[0])
        true = sims[rows, rows + start][:, None]  # (c, 1)
        greater = (sims > true).sum(1).double()  # items ranked above the match
        ties = (sims == true).sum(1).double() - 1  # others as similar as the match
        for k in ks:
            hits[k] += ((k - greater) / (ties + 1)).clamp(0, 1).sum()
    return {k: 100.0 * float(hits[k]) / n for k in ks}


def chance_recall(n: int, ks: Sequence[int] = RETRIEVAL_KS) -> dict[int, float]:
    """Recall@k in % of a random ranking of ``n`` gallery items with one match per query."""
    if n < 1:
        raise ValueError(f"chance recall needs a gallery of at least one item, got {n}")
    return {k: 100.0 * min(k, n) / n for k in ks}


def match_ids(query_ids: Sequence[str], gallery_ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """Row indices of the ids present on both sides, in query order (samples one side skipped)."""
    where = {s: i for i, s in enumerate(gallery_ids)}
    pairs = [(i, where[s]) for i, s in enumerate(query_ids) if s in where]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def retrieval_metrics(
    a: torch.Tensor,
    b: torch.Tensor,
    names: tuple[str, str] = ("a", "b"),
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[str, float]:
    """Both directions between paired embeddings ``a`` and ``b`` (row i = the same place).

    Returns ``r{k}_{A}_to_{B}``, ``r{k}_{B}_to_{A}`` and ``chance_r{k}`` for each k, in %.
    """
    na, nb = names
    out: dict[str, float] = {}
    for (q, g), (qn, gn) in (((a, b), (na, nb)), ((b, a), (nb, na))):
        for k, v in recall_at_k(q, g, ks).items():
            out[f"r{k}_{qn}_to_{gn}"] = v
    for k, v in chance_recall(a.shape[0], ks).items():
        out[f"chance_r{k}"] = v
    return out
