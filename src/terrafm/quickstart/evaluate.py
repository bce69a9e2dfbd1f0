"""Frozen-encoder evaluation of the quickstart: kNN, linear probe and segmentation probe (docs/design.md, "Evaluation protocols").

Glue over :mod:`terrafm.eval`: for one encoder and one sensor choice the features of each split are
extracted once, then reused by every protocol:

- **kNN** (docs/design.md, "Evaluation protocols / GEO-Bench v1": cosine similarity, k = 20, votes weighted by ``exp(sim / 0.07)``) with 100 %
  of the training labels and with a fraction of them. The fraction is drawn by
  :func:`terrafm.eval.subsets.fraction_indices`: per class, ``max(1, round(fraction * n_c))``
  samples, so 1 % of a small task still holds one example of every class. A single draw of ten
  examples is noisy, so the subset is drawn ``fraction_draws`` times (seeds ``seed .. seed +
  draws - 1``) and the mean is reported, with every draw kept.
- **Linear probe** (docs/design.md, "Evaluation protocols / Copernicus-Bench", Copernicus-Bench: BatchNorm1d without affine + Linear, SGD,
  one-cycle cosine) on the CLS token with all training labels.
- **Segmentation probe** (docs/design.md, "Evaluation protocols / GEO-Bench v1", GEO-Bench: a linear layer maps each patch token to 16 x 16
  class logits) on whole chips; mIoU over the test chips.
- **RankMe** (:func:`terrafm.eval.metrics.rankme`), the effective rank of the test split's CLS
  embeddings and of its patch tokens: how many directions the representation uses.

Across sensors (:func:`cross_sensor`, on the features already extracted, no further encoder pass):

- **Cross-sensor retrieval** (:mod:`terrafm.eval.retrieval`): each test chip's S1 embedding as the
  query, the S2 L2A embeddings of all test chips as the gallery; recall@1 / @5 of the same chip,
  and S2 -> S1; chance = k / N.
- **Missing sensor**: kNN whose training set is the fused S1 + S2 L2A features, tested on S2 L2A
  alone and on S1 alone (100 % and the reduced fraction of labels).

Controls (:func:`evaluate_controls`): the same classification and segmentation protocols on the
raw pixels (:class:`terrafm.eval.baselines.PixelEncoder`), and the patch-majority ceiling of the
segmentation probe (:func:`terrafm.eval.baselines.patch_majority`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from terrafm.eval import EvalTask, Features, extract_features, extract_patch_tokens, knn_evaluate
from terrafm.eval.baselines import PixelEncoder, patch_majority
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.eval.metrics import SegmentationMeter, rankme
from terrafm.eval.retrieval import match_ids, retrieval_metrics
from terrafm.eval.segmentation import SegSettings, evaluate_patch_probe, train_patch_probe
from terrafm.eval.subsets import fraction_indices

__all__ = [
    "ProbeConfig",
    "cross_sensor",
    "evaluate_controls",
    "evaluate_encoder",
    "evaluate_sensors",
    "sensor_label",
]

# kept features of one sensor choice: (train, test)
FeaturePair = tuple[Features, Features]


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
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    k: int,
    index: Sequence[int] | None = None,
) -> float:
    if index is not None:
        x, y = x[list(index)], y[list(index)]
    res = knn_evaluate(x, y, test_x, test_y, num_classes, ks=(k,))
    return float(res[f"knn{k}"])


def _knn_fractions(
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    seed: int,
) -> dict[str, Any]:
    """kNN with all labels and the mean over ``cfg.fraction_draws`` seeded reduced subsets."""
    draws, sizes = [], []
    for d in range(cfg.fraction_draws):
        idx = fraction_indices(y, cfg.fraction, seed + d)
        sizes.append(len(idx))
        draws.append(_knn(x, y, test_x, test_y, num_classes, cfg.k, idx))
    return {
        "knn_top1_full": _knn(x, y, test_x, test_y, num_classes, cfg.k),
        "knn_top1_fraction": sum(draws) / len(draws),
        "knn_top1_fraction_draws": draws,
        "fraction_train_sizes": sizes,
    }


def _classification(
    model: nn.Module,
    task: EvalTask,
    sensors: Sequence[str],
    cfg: ProbeConfig,
    seed: int,
    keep: dict[str, FeaturePair] | None = None,
) -> dict[str, Any]:
    kw: dict[str, Any] = {"batch_size": cfg.batch_size, "progress": False}
    train = extract_features(model, task.dataset("train", sensors), **kw)
    test = extract_features(model, task.dataset("test", sensors), **kw)
    if keep is not None:
        keep[sensor_label(sensors)] = (train, test)
    # pooled once: every kNN draw and the linear probe read the same tensors
    train_cls, test_cls = train.pooled("cls"), test.pooled("cls")
    knn = _knn_fractions(
        train_cls, train.labels, test_cls, test.labels, task.num_classes, cfg, seed
    )
    probe = train_linear_probe(
        train_cls,
        train.labels,
        task.num_classes,
        ProbeSettings(epochs=cfg.linear_epochs, seed=seed),
    )
    linear = probe_metrics(predict_linear(probe, test_cls), test.labels, False)
    return {
        **knn,
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
    keep: dict[str, FeaturePair] | None = None,
) -> dict[str, Any]:
    """Every protocol for one sensor choice (several sensors: fused input).

    ``keep``, when given, receives the classification features (train, test) under the sensor
    label, for :func:`cross_sensor`.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    out = _classification(model, cls_task, sensors, cfg, seed, keep)
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
    keep: dict[str, FeaturePair] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_sensors` for each sensor choice, keyed by :func:`sensor_label`."""
    model.eval()
    return {
        sensor_label(s): evaluate_sensors(model, cls_task, seg_task, s, cfg, seed, keep)
        for s in sensor_sets
    }


def cross_sensor(
    features: dict[str, FeaturePair],
    num_classes: int,
    cfg: ProbeConfig,
    seed: int,
    s1: str = "s1",
    s2: str = "s2_l2a",
) -> dict[str, Any]:
    """Cross-sensor retrieval and missing-sensor kNN from kept features (module docstring).

    ``features`` holds (train, test) features of ``s1``, ``s2`` and their fusion
    (:func:`sensor_label` keys), as :func:`evaluate_encoder` keeps them.
    """
    fused = sensor_label((s1, s2))
    missing = [k for k in (s1, s2, fused) if k not in features]
    if missing:
        raise ValueError(f"cross-sensor evaluation needs the features of {missing}")
    t0 = time.perf_counter()
    q, g = features[s1][1], features[s2][1]
    qi, gi = match_ids(q.ids, g.ids)
    ret = retrieval_metrics(q.pooled("cls")[qi], g.pooled("cls")[gi], ("s1", "s2"))
    out: dict[str, Any] = {
        "retrieval": {**ret, "n_gallery": len(qi), "query": s1, "gallery": s2, "split": "test"},
        "missing_sensor": {"train": fused},
    }
    train = features[fused][0]
    x = train.pooled("cls")
    for name in (s2, s1):
        test = features[name][1]
        out["missing_sensor"][name] = _knn_fractions(
            x, train.labels, test.pooled("cls"), test.labels, num_classes, cfg, seed
        )
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def evaluate_controls(
    cls_task: EvalTask,
    seg_task: EvalTask,
    sensor_sets: Sequence[Sequence[str]],
    cfg: ProbeConfig,
    seed: int,
    seg_sensor_sets: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The references an encoder is read against, on the same splits and protocols.

    - ``pixels``: :class:`~terrafm.eval.baselines.PixelEncoder` (CLS = band means and standard
      deviations; patch tokens = the raw normalised pixels of each 16 x 16 patch) through kNN and
      the linear probe for every choice of ``sensor_sets``, and through the segmentation probe for
      ``seg_sensor_sets`` (default: the same; the raw-pixel patch probe is the costly part);
    - ``patch_majority``: mIoU of the test masks with each 16 x 16 block painted with its majority
      class, the ceiling of any patch-level segmentation.
    """
    pixels = PixelEncoder()
    out: dict[str, Any] = {"pixels": {}}
    seg_sets = [
        sensor_label(s) for s in (sensor_sets if seg_sensor_sets is None else seg_sensor_sets)
    ]
    for sensors in sensor_sets:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        label = sensor_label(sensors)
        res = _classification(pixels, cls_task, sensors, cfg, seed)
        if label in seg_sets:
            res.update(_segmentation(pixels, seg_task, sensors, cfg, seed))
        res["seconds"] = round(time.perf_counter() - t0, 2)
        out["pixels"][label] = res
    t0 = time.perf_counter()
    meter = SegmentationMeter(seg_task.num_classes, seg_task.ignore_index)
    n = 0
    # any one sensor: only the masks are read
    test = seg_task.dataset("test", tuple(seg_task.default_sensors[:1]))
    for i in range(len(test)):
        m = test[i]["mask"][None]  # (1, H, W)
        meter.update(patch_majority(m, seg_task.num_classes, seg_task.ignore_index), m)
        n += 1
    res = meter.compute()
    miou = res["miou"]
    assert isinstance(miou, float)
    out["patch_majority"] = {
        "miou": miou,
        "n_test_chips": n,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return out
