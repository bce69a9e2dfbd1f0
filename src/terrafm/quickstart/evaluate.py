"""Frozen-encoder evaluation of the quickstart: kNN, linear probe and segmentation probe (docs/design.md, "Evaluation protocols").

A thin caller of the evaluator (:class:`terrafm.eval.runner.Evaluator`), which ``terrafm eval``
and the suites run too: for one encoder the features of each split and sensor choice are extracted
once, kept by the evaluator, and reused by every protocol below; this module only picks the
protocols' settings (:class:`ProbeConfig`) and arranges their :class:`~terrafm.eval.results.EvalResult`
records into the quickstart's summary keys:

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

Across sensors (:func:`cross_sensor`, on the features the evaluator already holds, no further
encoder pass):

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

from terrafm.eval import EvalTask
from terrafm.eval.baselines import PixelEncoder, patch_majority
from terrafm.eval.metrics import SegmentationMeter, rankme
from terrafm.eval.results import iou_key
from terrafm.eval.retrieval import RETRIEVAL_KS
from terrafm.eval.runner import EvalSettings, Evaluator

__all__ = [
    "ProbeConfig",
    "cross_sensor",
    "evaluate_controls",
    "evaluate_encoder",
    "evaluate_sensors",
    "probe_settings",
    "sensor_label",
]


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


def probe_settings(cfg: ProbeConfig, seed: int) -> EvalSettings:
    """The evaluator settings of the quickstart's probes (CPU, no disk cache, no progress bars).

    kNN reports ``k`` only; the linear probe is read on the test split alone (the validation
    split is not used, which saves its encoder pass).
    """
    return EvalSettings(
        ks=(cfg.k,), feature_batch=cfg.batch_size, val_metrics=False, seed=seed, progress=False
    )


def _evaluator(model: nn.Module, task: EvalTask, cfg: ProbeConfig, seed: int) -> Evaluator:
    if task.kind == "segmentation":  # whole chips are the tiles
        return Evaluator(model, task, probe_settings(cfg, seed), tile=task.image_size or 64)
    return Evaluator(model, task, probe_settings(cfg, seed))


def _knn_fractions(
    ev: Evaluator,
    sensors: Sequence[str],
    cfg: ProbeConfig,
    seed: int,
    test_sensors: Sequence[str] | None = None,
) -> dict[str, Any]:
    """kNN with all labels and the mean over ``cfg.fraction_draws`` seeded reduced subsets."""
    draws = [
        ev.run(
            "knn", sensors, test_sensors=test_sensors, label_fraction=cfg.fraction, seed=seed + d
        )
        for d in range(cfg.fraction_draws)
    ]
    top1 = [r.primary_value for r in draws]
    return {
        "knn_top1_full": ev.run("knn", sensors, test_sensors=test_sensors).primary_value,
        "knn_top1_fraction": sum(top1) / len(top1),
        "knn_top1_fraction_draws": top1,
        "fraction_train_sizes": [r.counts.train for r in draws],
    }


def _classification(
    ev: Evaluator, sensors: Sequence[str], cfg: ProbeConfig, seed: int
) -> dict[str, Any]:
    knn = _knn_fractions(ev, sensors, cfg, seed)
    linear = ev.run("linear", sensors, epochs=cfg.linear_epochs)
    test_cls = ev.features("test", sensors).pooled("cls")  # kept by the evaluator
    return {
        **knn,
        "linear_top1": float(linear.primary_value),
        "rankme_cls": rankme(test_cls.float()),
        "dim": int(test_cls.shape[1]),
        "n_train": linear.counts.train,
        "n_test": linear.counts.test,
    }


def _segmentation(
    ev: Evaluator, sensors: Sequence[str], cfg: ProbeConfig, seed: int
) -> dict[str, Any]:
    res = ev.run(
        "seg-linear", sensors, epochs=cfg.seg_epochs, batch_size=cfg.seg_batch, lr=cfg.seg_lr
    )
    test = ev.patch_tokens("test", sensors)  # kept by the evaluator
    return {
        "miou": float(res.metrics["miou"]),
        "rankme_patch": rankme(test.tokens.reshape(-1, test.tokens.shape[-1]).float()),
        "per_class_iou": {c: res.metrics[iou_key(c)] for c in ev.task.classes},
        "n_train_chips": res.counts.train,
        "n_test_chips": res.counts.test,
    }


def evaluate_sensors(
    model: nn.Module,
    cls_task: EvalTask,
    seg_task: EvalTask,
    sensors: Sequence[str],
    cfg: ProbeConfig,
    seed: int,
    classifier: Evaluator | None = None,
) -> dict[str, Any]:
    """Every protocol for one sensor choice (several sensors: fused input).

    ``classifier``, when given, is the evaluator of ``model`` on ``cls_task`` to run the
    classification protocols through (it keeps the features, for :func:`cross_sensor`).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    ev = classifier or _evaluator(model, cls_task, cfg, seed)
    if ev.model is not model or ev.task is not cls_task:
        raise ValueError("the classifier evaluator must hold this model and classification task")
    out = _classification(ev, sensors, cfg, seed)
    out.update(_segmentation(_evaluator(model, seg_task, cfg, seed), sensors, cfg, seed))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def evaluate_encoder(
    model: nn.Module,
    cls_task: EvalTask,
    seg_task: EvalTask,
    sensor_sets: Sequence[Sequence[str]],
    cfg: ProbeConfig,
    seed: int,
    classifier: Evaluator | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_sensors` for each sensor choice, keyed by :func:`sensor_label`.

    Pass ``classifier = Evaluator(model, cls_task, probe_settings(cfg, seed))`` to keep the
    classification features for :func:`cross_sensor`.
    """
    model.eval()
    return {
        sensor_label(s): evaluate_sensors(model, cls_task, seg_task, s, cfg, seed, classifier)
        for s in sensor_sets
    }


def cross_sensor(
    classifier: Evaluator,
    cfg: ProbeConfig,
    seed: int,
    s1: str = "s1",
    s2: str = "s2_l2a",
) -> dict[str, Any]:
    """Cross-sensor retrieval and missing-sensor kNN (module docstring).

    ``classifier`` is the evaluator :func:`evaluate_encoder` ran the classification protocols
    through: the features of ``s1``, ``s2`` and their fusion are read from it, not recomputed.
    """
    t0 = time.perf_counter()
    ret = classifier.run("retrieval", [s1, s2])
    m = ret.metrics
    q, g = "+".join(ret.details["query"]), "+".join(ret.details["gallery"])
    named: dict[str, float] = {}
    for (x, y), (xn, yn) in (((q, g), ("s1", "s2")), ((g, q), ("s2", "s1"))):
        for k in RETRIEVAL_KS:
            named[f"r{k}_{xn}_to_{yn}"] = m[f"r{k}_{x}_to_{y}"]
    for k in RETRIEVAL_KS:
        named[f"chance_r{k}"] = m[f"chance_r{k}"]
    fused = sensor_label((s1, s2))
    out: dict[str, Any] = {
        "retrieval": {**named, "n_gallery": ret.counts.test, "query": s1, "gallery": s2,
                      "split": "test"},
        "missing_sensor": {"train": fused},
    }  # fmt: skip
    for name in (s2, s1):
        out["missing_sensor"][name] = _knn_fractions(
            classifier, (s1, s2), cfg, seed, test_sensors=(name,)
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
    classifier = _evaluator(pixels, cls_task, cfg, seed)
    for sensors in sensor_sets:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        label = sensor_label(sensors)
        res = _classification(classifier, sensors, cfg, seed)
        if label in seg_sets:
            res.update(_segmentation(_evaluator(pixels, seg_task, cfg, seed), sensors, cfg, seed))
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
