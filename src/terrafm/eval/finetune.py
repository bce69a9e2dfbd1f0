"""End-to-end fine-tuning of the encoder with a linear head (the GEO-Bench protocol).

Protocol: docs/design.md, "Evaluation protocols", GEO-Bench v1.

A copy of the encoder gets a linear head on its CLS token; both train with AdamW, a linear warm-up
over the first 10 % of steps then cosine decay to 1e-6, gradient-norm clipping at 1.0, random
flips, cross-entropy (multi-label soft margin for multi-label tasks). Optional layer-wise learning
rate decay scales block ``i`` of ``L`` by ``decay ** (L + 1 - layer)``, with the stems and tokens as
layer 0 and the final norm and head as layer ``L + 1``. When several learning rates are given, each
is trained and the one with the best validation score is reported (the published protocol picks
the learning rate on the validation split).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from terrafm.eval.features import check_skipped, collate, flip_batch, sensor_masks
from terrafm.eval.linear import probe_metrics
from terrafm.eval.tasks import EvalDataset
from terrafm.schedules import set_lr, warmup_cosine

__all__ = ["Classifier", "FinetuneSettings", "finetune", "layer_decay_groups"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneSettings:
    """Optimisation of fine-tuning (defaults: the GEO-Bench protocol)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    final_lr: float = 1e-6
    grad_clip: float = 1.0
    layer_decay: float | None = None
    seed: int = 0


class Classifier(nn.Module):
    """Encoder + linear head on the normed CLS token."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, num_classes)  # type: ignore[arg-type]
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:  # -> (B, K)
        """``masks``: per-sample sensor masks where some samples lack a sensor."""
        return self.head(self.encoder(inputs) if masks is None else self.encoder(inputs, masks))


def _layer_id(name: str, depth: int) -> int:
    m = re.match(r"encoder\.blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    if name.startswith(("encoder.patch_embed", "encoder.cls_token", "encoder.pos_embed")):
        return 0
    return depth + 1


def layer_decay_groups(
    model: Classifier, weight_decay: float, decay: float | None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: no weight decay on norms/biases/tokens; ``lr_scale`` per layer."""
    depth = len(model.encoder.blocks)  # type: ignore[arg-type]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        layer = _layer_id(name, depth) if decay is not None else depth + 1
        scale = decay ** (depth + 1 - layer) if decay is not None else 1.0
        g = groups.setdefault(
            (layer, no_wd),
            {"params": [], "weight_decay": 0.0 if no_wd else weight_decay, "lr_scale": scale},
        )
        g["params"].append(p)
    return list(groups.values())


def _loss(multilabel: bool) -> nn.Module:
    return nn.MultiLabelSoftMarginLoss() if multilabel else nn.CrossEntropyLoss()


@torch.no_grad()
def _predict(
    model: Classifier,
    dataset: EvalDataset,
    batch_size: int,
    device: torch.device,
    skipped: list[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    logits, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        skipped += batch["errors"]
        if not batch["id"]:
            continue
        inputs = {s: x.to(device) for s, x in batch["inputs"].items()}
        logits.append(model(inputs, sensor_masks(batch, device)).float().cpu())
        labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


def _train_one(
    encoder: nn.Module,
    train: EvalDataset,
    settings: FinetuneSettings,
    lr: float,
    device: torch.device,
    progress: bool,
    skipped: list[str],
) -> Classifier:
    multilabel = train.task.kind == "multilabel"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = Classifier(copy.deepcopy(encoder), train.task.num_classes).to(device)
    opt = torch.optim.AdamW(
        layer_decay_groups(model, settings.weight_decay, settings.layer_decay), lr=lr
    )
    gen = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        train,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=gen,
        collate_fn=collate,
        drop_last=len(train) > settings.batch_size,
    )
    total = max(1, len(loader) * settings.epochs)
    warmup = int(settings.warmup_frac * total)
    loss_fn = _loss(multilabel)
    step = 0
    bar = tqdm(total=total, desc=f"finetune lr={lr:g}", disable=not progress)
    for _ in range(settings.epochs):
        model.train()
        for batch in loader:
            skipped += batch["errors"]
            if not batch["id"]:
                continue
            views = torch.randint(4, (len(batch["id"]),), generator=gen)
            inputs = {s: flip_batch(x, views).to(device) for s, x in batch["inputs"].items()}
            y = batch["label"].to(device)
            set_lr(opt, warmup_cosine(step, total, lr, warmup, settings.final_lr))
            out = model(inputs, sensor_masks(batch, device))
            loss = loss_fn(out, y.float() if multilabel else y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"fine-tuning loss is {loss.item()} at step {step} (lr {lr})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            step += 1
            bar.update(1)
    bar.close()
    return model


def finetune(
    encoder: nn.Module,
    train: EvalDataset,
    val: EvalDataset | None,
    test: EvalDataset,
    settings: FinetuneSettings,
    lrs: Sequence[float] | None = None,
    metric: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_skipped: float = 0.01,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder``; returns test/val scores at the chosen learning rate.

    Args:
        metric: the validation score that picks the learning rate (default ``top1``, or
            ``micro_f1`` for multi-label tasks).
        max_skipped: fraction of unreadable samples (``on_error="skip"`` datasets) above which
            the run fails; skipped samples are logged once and counted.

    Returns:
        ``{"test": {metric: %}, "val": {metric: %} | None, "lr": chosen, "sweep": {lr: val %},
        "skipped": n}``.
    """
    dev = torch.device(device)
    multilabel = train.task.kind == "multilabel"
    metric = metric or ("micro_f1" if multilabel else "top1")
    lrs = list(lrs or [settings.lr])
    if len(lrs) > 1 and val is None:
        raise ValueError("choosing among several learning rates needs a validation split")
    sweep: dict[str, float] = {}
    skipped: list[str] = []
    best: tuple[float, float, Classifier, dict[str, float] | None] | None = None
    for lr in lrs:
        model = _train_one(encoder, train, settings, lr, dev, progress, skipped)
        val_m = (
            probe_metrics(*_predict(model, val, settings.batch_size, dev, skipped), multilabel)
            if val is not None
            else None
        )
        score = val_m[metric] if val_m is not None else 0.0
        sweep[f"{lr:g}"] = score
        log.info("fine-tuning lr=%g: val %s %.2f", lr, metric, score)
        if best is None or score > best[0]:
            best = (score, lr, model, val_m)
    assert best is not None
    test_m = probe_metrics(*_predict(best[2], test, settings.batch_size, dev, skipped), multilabel)
    total = len(train) + len(test) + (len(val) if val is not None else 0)
    check_skipped(skipped, total, max_skipped)
    return {
        "test": test_m,
        "val": best[3],
        "lr": best[1],
        "sweep": sweep,
        "skipped": len(set(skipped)),
    }
