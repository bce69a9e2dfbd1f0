"""k-nearest-neighbour classification on frozen features, as docs/design.md, "Evaluation protocols / GEO-Bench v1" defines it.

For every test embedding: cosine similarity to every training embedding, the ``k`` most similar
(k = 20; k = 5 also reported), each voting for its class with weight ``exp(sim / T)``, T = 0.07;
the class with the largest summed weight wins (the first such class on a tie). Multi-label tasks
run one binary kNN per class on the same neighbours (positive when the weight of neighbours holding
the class exceeds the weight of those without it) and report micro-F1. If the training set has
fewer than ``k`` samples, all of them vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from terrafm.eval.metrics import micro_f1, top1

__all__ = ["KNN_KS", "TEMPERATURE", "knn_evaluate", "knn_predict", "knn_predict_multilabel"]

KNN_KS = (20, 5)
TEMPERATURE = 0.07


def _neighbours(
    train: torch.Tensor, test: torch.Tensor, k: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine similarities and indices: (N_test, k) each."""
    k = min(k, train.shape[0])
    tr = F.normalize(train.float(), dim=1)
    sims, idxs = [], []
    for start in range(0, test.shape[0], chunk):
        te = F.normalize(test[start : start + chunk].float(), dim=1)
        s, i = (te @ tr.T).topk(k, dim=1)  # (c, k)
        sims.append(s)
        idxs.append(i)
    return torch.cat(sims), torch.cat(idxs)


def knn_predict(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = TEMPERATURE,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class predictions (N_test,) from (N_train, D) / (N_test, D) features and (N_train,) labels."""
    sims, idx = _neighbours(train, test, k, chunk)
    weights = (sims / temperature).exp()  # (N, k)
    votes = torch.zeros(test.shape[0], num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, train_labels.long()[idx], weights)
    return votes.argmax(1)


def knn_predict_multilabel(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    k: int = 20,
    temperature: float = TEMPERATURE,
    chunk: int = 1024,
) -> torch.Tensor:
    """Binary predictions (N_test, K) from multi-hot (N_train, K) labels, one kNN per class."""
    sims, idx = _neighbours(train, test, k, chunk)
    weights = (sims / temperature).exp()[..., None]  # (N, k, 1)
    held = train_labels.float()[idx]  # (N, k, K)
    positive = (weights * held).sum(1)
    negative = (weights * (1 - held)).sum(1)
    return (positive > negative).long()


def knn_evaluate(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    multilabel: bool = False,
    ks: Sequence[int] = KNN_KS,
    temperature: float = TEMPERATURE,
) -> dict[str, float]:
    """Top-1 (or micro-F1 for multi-label) in % for each ``k``: ``{"knn20": ..., "knn5": ...}``."""
    out: dict[str, float] = {}
    for k in ks:
        if multilabel:
            pred = knn_predict_multilabel(train, train_labels, test, k, temperature)
            out[f"knn{k}"] = micro_f1(pred, test_labels)
        else:
            pred = knn_predict(train, train_labels, test, num_classes, k, temperature)
            out[f"knn{k}"] = top1(pred, test_labels, num_classes)
    return out
