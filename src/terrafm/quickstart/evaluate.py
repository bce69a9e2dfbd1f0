"""Frozen-encoder evaluation of the quickstart: kNN, linear probe and segmentation probe (SPEC §6).

Glue over :mod:`terrafm.eval`: for one encoder and one sensor choice the features of each split are
extracted once, then reused by every protocol:

- **kNN** (SPEC §6.1: cosine similarity, k = 20, votes weighted by ``exp(sim / 0.07)``) with 100 %
  of the training labels and with a fraction of them. The fraction is drawn by
  :func:`terrafm.eval.subsets.fraction_indices`: per class, ``max(1, round(fraction * n_c))``
  samples, so 1 % of a small task still holds one example of every class. A single draw of ten
  examples is noisy, so the subset is drawn ``fraction_draws`` times (seeds ``seed .. seed +
  draws - 1``) and the mean is reported, with every draw kept.
- **Linear probe** (SPEC §6.2, Copernicus-Bench: BatchNorm1d without affine + Linear, SGD,
  one-cycle cosine) on the CLS token with all training labels.
- **Segmentation probe** (SPEC §6.1, GEO-Bench: a linear layer maps each patch token to 16 x 16
  class logits) on whole chips; mIoU over the test chips.
- **RankMe** (:func:`terrafm.eval.metrics.rankme`), the effective rank of the test split's CLS
  embeddings and of its patch tokens: how many directions the representation uses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from terrafm.eval import EvalTask, extract_features, extract_patch_tokens, knn_evaluate
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.eval.metrics import rankme
from terrafm.eval.segmentation import SegSettings, evaluate_patch_probe, train_patch_probe
from terrafm.eval.subsets import fraction_indices

__all__ = ["ProbeConfig", "evaluate_encoder", "evaluate_sensors", "sensor_label"]


@dataclass(frozen=True)
class ProbeConfig:
    """How the encoders are probed.

    Attributes:
        k: neighbours of the kNN classifier.
        fraction: the reduced label fraction (0.01 = 1 %).
        fraction_draws: seeded draws of the reduced subset, averaged.
        linear_epochs: linear-probe epochs (batch 64, lr 0.1, SGD, one-cycle cosine).
        seg_epochs: segmentation-probe epochs (AdamW, cosine).
        seg_lr: segmentation-probe learning rate.
        seg_batch: segmentation-probe batch (chips).
        batch_size: images per forward pass during feature extraction.
    """

    k: int = 20
    fraction: float = 0.01
    fraction_draws: int = 20
    linear_epochs: int = 50
    seg_epochs: int = 50
    seg_lr: float = 1e-3
    seg_batch: int = 16
    batch_size: int = 64


def sensor_label(sensors: Sequence[str]) -> str:
    """``s1+s2_l2a`` style name of a sensor choice."""
    return "+".join(sensors)


def _knn(
    train: Any, test: Any, num_classes: int, k: int, index: Sequence[int] | None = None
) -> float:
    x, y = train.pooled("cls"), train.labels
    if index is not None:
        x, y = x[list(index)], y[list(index)]
    res = knn_evaluate(x, y, test.pooled("cls"), test.labels, num_classes, ks=(k,))
    return float(res[f"knn{k}"])


def _classification(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], cfg: ProbeConfig, seed: int
) -> dict[str, Any]:
    kw: dict[str, Any] = {"batch_size": cfg.batch_size, "progress": False}
    train = extract_features(model, task.dataset("train", sensors), **kw)
    test = extract_features(model, task.dataset("test", sensors), **kw)
    draws, sizes = [], []
    for d in range(cfg.fraction_draws):
        idx = fraction_indices(train.labels, cfg.fraction, seed + d)
        sizes.append(len(idx))
        draws.append(_knn(train, test, task.num_classes, cfg.k, idx))
    probe = train_linear_probe(
        train.pooled("cls"),
        train.labels,
        task.num_classes,
        ProbeSettings(epochs=cfg.linear_epochs, seed=seed),
    )
    test_cls = test.pooled("cls")
    linear = probe_metrics(predict_linear(probe, test_cls), test.labels, False)
    return {
        "knn_top1_full": _knn(train, test, task.num_classes, cfg.k),
        "knn_top1_fraction": sum(draws) / len(draws),
        "knn_top1_fraction_draws": draws,
        "fraction_train_sizes": sizes,
        "linear_top1": float(linear["top1"]),
        "rankme_cls": rankme(test_cls.float()),
        "dim": int(test_cls.shape[1]),
        "n_train": len(train),
        "n_test": len(test),
    }


def _segmentation(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], cfg: ProbeConfig, seed: int
) -> dict[str, Any]:
    size = task.image_size or 64
    kw: dict[str, Any] = {"tile": size, "batch_size": cfg.batch_size, "progress": False}
    train = extract_patch_tokens(model, task.dataset("train", sensors), **kw)
    test = extract_patch_tokens(model, task.dataset("test", sensors), **kw)
    settings = SegSettings(cfg.seg_epochs, cfg.seg_batch, cfg.seg_lr, 0.01, seed=seed)
    patch = int(getattr(model, "patch_size", 16))
    head = train_patch_probe(
        train, task.num_classes, settings, task.ignore_index, patch, "cpu", False
    )
    res = evaluate_patch_probe(head, test, task.num_classes, task.ignore_index)
    per_class = res["per_class_iou"]
    assert isinstance(per_class, list)
    return {
        "miou": float(res["miou"]),
        "rankme_patch": rankme(test.tokens.reshape(-1, test.tokens.shape[-1]).float()),
        "per_class_iou": dict(zip(task.classes, (float(v) for v in per_class))),
        "n_train_chips": len(train.ids),
        "n_test_chips": len(test.ids),
    }


def evaluate_sensors(
    model: nn.Module,
    cls_task: EvalTask,
    seg_task: EvalTask,
    sensors: Sequence[str],
    cfg: ProbeConfig,
    seed: int,
) -> dict[str, Any]:
    """Every protocol for one sensor choice (several sensors: fused input)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    out = _classification(model, cls_task, sensors, cfg, seed)
    out.update(_segmentation(model, seg_task, sensors, cfg, seed))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def evaluate_encoder(
    model: nn.Module,
    cls_task: EvalTask,
    seg_task: EvalTask,
    sensor_sets: Sequence[Sequence[str]],
    cfg: ProbeConfig,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_sensors` for each sensor choice, keyed by :func:`sensor_label`."""
    model.eval()
    return {
        sensor_label(s): evaluate_sensors(model, cls_task, seg_task, s, cfg, seed)
        for s in sensor_sets
    }
