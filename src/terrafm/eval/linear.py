"""Linear probing on frozen features, as Copernicus-Bench does it.

Protocol: docs/design.md, "Evaluation protocols", Copernicus-Bench.

The probe is ``BatchNorm1d(affine=False)`` then ``Linear`` on the pooled feature, trained with SGD
(weight decay 1e-4) under a one-cycle cosine schedule for 50 epochs, batch 64, learning rate 0.1
(1.0 for BigEarthNet), cross-entropy, or the multi-label soft-margin loss for multi-label tasks.
Training runs on cached features; with 4-view features (:func:`terrafm.eval.features.
extract_features` ``views=4``) every sample takes a random flip each epoch, which is exactly the
protocol's flip augmentation for a frozen encoder. Reports top-1 (or micro mAP) on val and test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from terrafm.eval.metrics import micro_f1, micro_map, top1
from terrafm.schedules import one_cycle

__all__ = ["LinearProbe", "ProbeSettings", "predict_linear", "probe_metrics", "train_linear_probe"]


@dataclass
class ProbeSettings:
    """Optimisation of a linear probe (defaults: the Copernicus-Bench protocol)."""

    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    seed: int = 0


class LinearProbe(nn.Module):
    """BatchNorm1d without affine parameters, then a linear classifier."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, K)
        return self.head(self.norm(x))


def _loss(multilabel: bool) -> nn.Module:
    return nn.MultiLabelSoftMarginLoss() if multilabel else nn.CrossEntropyLoss()


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    multilabel: bool = False,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Train a probe on (V, N, D) features (V flip views, or 1) and (N,) / (N, K) labels."""
    if features.ndim == 2:
        features = features[None]
    v, n, d = features.shape
    if n < 2:
        raise ValueError(f"a linear probe needs at least 2 training samples, got {n}")
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        probe = LinearProbe(d, num_classes).to(dev)
    gen = torch.Generator().manual_seed(settings.seed)
    bs = min(settings.batch_size, n)
    steps_per_epoch = n // bs  # drop_last: BatchNorm needs > 1 sample per batch
    opt = torch.optim.SGD(probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total = steps_per_epoch * settings.epochs
    sched = one_cycle(opt, total, settings.lr, settings.warmup_epochs / max(settings.epochs, 1))
    loss_fn = _loss(multilabel)
    probe.train()
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        view = torch.randint(v, (n,), generator=gen)
        for s in range(steps_per_epoch):
            idx = order[s * bs : (s + 1) * bs]
            x = features[view[idx], idx].float().to(dev)  # (B, D)
            y = labels[idx].to(dev)
            loss = loss_fn(probe(x), y.float() if multilabel else y.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return probe.eval()


@torch.no_grad()
def predict_linear(
    probe: LinearProbe, features: torch.Tensor, batch_size: int = 4096
) -> torch.Tensor:
    """Logits (N, K) of (N, D) features."""
    dev = next(probe.parameters()).device
    probe.eval()
    return torch.cat(
        [
            probe(features[i : i + batch_size].float().to(dev)).cpu()
            for i in range(0, len(features), batch_size)
        ]
    )


def probe_metrics(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """``{"top1": %}`` for single-label tasks; ``{"micro_map": %, "micro_f1": %}`` (sigmoid > 0.5)
    for multi-label tasks."""
    if multilabel:
        scores = torch.sigmoid(logits)
        return {
            "micro_map": micro_map(scores, labels),
            "micro_f1": micro_f1((scores > 0.5).long(), labels),
        }
    return {"top1": top1(logits, labels, logits.shape[1])}
