"""Evaluation metrics, computed with torchmetrics (docs/design.md, "Evaluation protocols").

- ``top1``: overall accuracy (micro) for single-label classification.
- ``micro_f1``: micro-averaged F1 of binary multi-label predictions (GEO-Bench kNN, BigEarthNet).
- ``micro_map``: micro-averaged average precision of multi-label scores (Copernicus-Bench).
- ``miou``: mean IoU over classes that occur in the predictions or the targets (torchmetrics
  ``average="macro"`` leaves out classes whose union is empty), pixels equal to ``ignore_index``
  excluded; ``per_class_iou`` lists every class (0 where the union is empty).

All values are returned as percentages (0-100), like the published tables.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassJaccardIndex,
    MultilabelAveragePrecision,
    MultilabelF1Score,
)

__all__ = ["SegmentationMeter", "micro_f1", "micro_map", "miou", "rankme", "top1"]


def top1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Accuracy in % of class predictions (N,) or scores (N, K) against labels (N,)."""
    m = MulticlassAccuracy(num_classes=num_classes, average="micro", top_k=1)
    return 100.0 * float(m(pred.cpu(), target.long().cpu()))


def micro_f1(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Micro F1 in % of binary predictions (N, K) against multi-hot targets (N, K)."""
    m = MultilabelF1Score(num_labels=target.shape[1], average="micro", threshold=0.5)
    return 100.0 * float(m(pred.float().cpu(), target.long().cpu()))


def micro_map(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Micro average precision in % of scores (N, K) against multi-hot targets (N, K)."""
    m = MultilabelAveragePrecision(num_labels=target.shape[1], average="micro")
    return 100.0 * float(m(scores.float().cpu(), target.long().cpu()))


class SegmentationMeter:
    """Accumulates a confusion over batches; mIoU and per-class IoU in %."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self._mean = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)
        self._each = MulticlassJaccardIndex(num_classes, average="none", ignore_index=ignore_index)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred: (B, H, W) class indices or (B, K, H, W) logits; target: (B, H, W)."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(1)
        pred, target = pred.detach().cpu().long(), target.detach().cpu().long()
        self._mean.update(pred, target)
        self._each.update(pred, target)

    def compute(self) -> dict[str, float | list[float]]:
        return {
            "miou": 100.0 * float(self._mean.compute()),
            "per_class_iou": [100.0 * float(v) for v in self._each.compute()],
        }


def miou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> float:
    """mIoU in % of one batch of predictions against targets (see :class:`SegmentationMeter`)."""
    meter = SegmentationMeter(num_classes, ignore_index)
    meter.update(pred, target)
    return float(meter.compute()["miou"])  # type: ignore[arg-type]


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): the effective rank of an (N, D) embedding matrix.

    ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular values
    of the (uncentred) matrix: D for embeddings spread evenly over all directions, 1 for a
    collapsed one. A cheap, label-free health check of a self-supervised representation; it
    falls when the embedding concentrates in a few directions (dimensional collapse).
    """
    if features.ndim != 2 or min(features.shape) == 0:
        raise ValueError(
            f"rankme needs a non-empty (N, D) matrix, got shape {tuple(features.shape)}"
        )
    sigma = torch.linalg.svdvals(features.double())
    p = sigma / sigma.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
