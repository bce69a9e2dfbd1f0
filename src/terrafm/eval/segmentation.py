"""Segmentation protocols on a frozen encoder (docs/design.md, "Evaluation protocols").

- **Patch linear probe** (GEO-Bench, the harness behind TerraFM's tables): images are cut into
  64 px tiles; a linear layer maps each patch token to ``p x p`` class logits (p = 16, the patch
  size), which tile back into a full-resolution map. Trained on cached patch tokens with AdamW and
  a cosine schedule, cross-entropy ignoring ``ignore_index``; mIoU on the test tiles.
- **UPerNet** (Copernicus-Bench, Landslide4Sense): the four block outputs
  ``model.get_intermediate_layers(x, model.dense_layers, reshape=True)`` feed
  :class:`terrafm.eval.upernet.UPerNet`; the head trains with AdamW under a one-cycle cosine
  schedule, loss = CE(main) + 0.4 CE(auxiliary), random flips of image and mask together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from terrafm.eval.features import PatchFeatures, collate, flip_batch, sensor_masks
from terrafm.eval.metrics import SegmentationMeter
from terrafm.eval.tasks import EvalDataset
from terrafm.eval.upernet import UPerNet
from terrafm.schedules import one_cycle, set_lr, warmup_cosine

__all__ = [
    "PatchLinearHead",
    "SegSettings",
    "evaluate_patch_probe",
    "evaluate_upernet",
    "train_patch_probe",
    "train_upernet",
]


@dataclass
class SegSettings:
    """Optimisation of a segmentation head."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.0
    seed: int = 0
    channels: int = 512  # UPerNet width
    aux_weight: float = 0.4


class PatchLinearHead(nn.Module):
    """Linear map from each patch token to ``p x p`` class logits."""

    def __init__(self, dim: int, num_classes: int, patch: int = 16):
        super().__init__()
        self.num_classes, self.patch = num_classes, patch
        self.proj = nn.Linear(dim, num_classes * patch * patch)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(T, g*g, D) -> (T, K, g*p, g*p)."""
        t, n, _ = tokens.shape
        g, p, k = int(round(n**0.5)), self.patch, self.num_classes
        x = self.proj(tokens).reshape(t, g, g, k, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(t, k, g * p, g * p)


def _ce(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int) -> torch.Tensor | None:
    """Cross-entropy over labelled pixels; ``None`` when a batch has none."""
    if not bool((mask != ignore_index).any()):
        return None
    return F.cross_entropy(logits, mask, ignore_index=ignore_index)


def train_patch_probe(
    train: PatchFeatures,
    num_classes: int,
    settings: SegSettings,
    ignore_index: int = 255,
    patch: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> PatchLinearHead:
    """Train the patch linear probe on cached tile tokens."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = PatchLinearHead(train.tokens.shape[-1], num_classes, patch).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    n, bs = len(train.ids), settings.batch_size
    steps = -(-n // bs)
    total = steps * settings.epochs
    step = 0
    for _ in tqdm(range(settings.epochs), desc="patch probe", disable=not progress):
        order = torch.randperm(n, generator=gen)
        for s in range(steps):
            idx = order[s * bs : (s + 1) * bs]
            set_lr(
                opt, warmup_cosine(step, total, settings.lr, int(settings.warmup_frac * total), 0.0)
            )
            step += 1
            loss = _ce(
                head(train.tokens[idx].float().to(dev)), train.masks[idx].to(dev), ignore_index
            )
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


@torch.no_grad()
def evaluate_patch_probe(
    head: PatchLinearHead,
    test: PatchFeatures,
    num_classes: int,
    ignore_index: int = 255,
    batch_size: int = 256,
) -> dict[str, Any]:
    """mIoU and per-class IoU (%) of the probe on test tiles."""
    dev = next(head.parameters()).device
    meter = SegmentationMeter(num_classes, ignore_index)
    for i in range(0, len(test.ids), batch_size):
        logits = head(test.tokens[i : i + batch_size].float().to(dev))
        meter.update(logits.argmax(1).cpu(), test.masks[i : i + batch_size])
    return meter.compute()


@torch.no_grad()
def _block_maps(
    encoder: nn.Module,
    inputs: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The four dense block outputs as maps (B, D, H/16, W/16) (``masks``: per-sample sensors)."""
    layers = encoder.dense_layers  # type: ignore[attr-defined]
    kw = {} if masks is None else {"masks": masks}
    return list(encoder.get_intermediate_layers(inputs, layers, reshape=True, **kw))  # type: ignore[operator]


def train_upernet(
    encoder: nn.Module,
    train: EvalDataset,
    settings: SegSettings,
    device: str | torch.device = "cpu",
    progress: bool = True,
    skipped: list[str] | None = None,
) -> UPerNet:
    """Train a UPerNet head on the frozen encoder's four block outputs.

    Messages of unreadable samples (``on_error="skip"`` datasets) are appended to ``skipped``.
    """
    skipped = skipped if skipped is not None else []
    dev = torch.device(device)
    encoder.eval().to(dev)
    task = train.task
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        head = UPerNet(encoder.embed_dim, task.num_classes, settings.channels).to(dev)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        train, batch_size=settings.batch_size, shuffle=True, generator=gen, collate_fn=collate,
        drop_last=len(train) > settings.batch_size,
    )  # fmt: skip
    sched = one_cycle(opt, len(loader) * settings.epochs, settings.lr, settings.warmup_frac)
    bar = tqdm(total=len(loader) * settings.epochs, desc="upernet", disable=not progress)
    for _ in range(settings.epochs):
        head.train()
        for batch in loader:
            bar.update(1)
            skipped += batch["errors"]
            if len(batch["id"]) > 1:  # BatchNorm in the head needs more than one sample
                views = torch.randint(4, (len(batch["id"]),), generator=gen)
                inputs = {s: flip_batch(x, views).to(dev) for s, x in batch["inputs"].items()}
                mask = flip_batch(batch["mask"], views).to(dev)
                maps = _block_maps(encoder, inputs, sensor_masks(batch, dev))
                main, aux = head(maps, mask.shape[-2:])
                loss = _ce(main, mask, task.ignore_index)
                if loss is not None:
                    loss = loss + settings.aux_weight * F.cross_entropy(
                        aux, mask, ignore_index=task.ignore_index
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            sched.step()
    bar.close()
    return head.eval()


@torch.no_grad()
def evaluate_upernet(
    encoder: nn.Module,
    head: UPerNet,
    test: EvalDataset,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    skipped: list[str] | None = None,
) -> dict[str, Any]:
    """mIoU and per-class IoU (%) of a trained head on a split (unreadable samples noted in
    ``skipped``)."""
    skipped = skipped if skipped is not None else []
    dev = torch.device(device)
    encoder.eval().to(dev)
    head.eval().to(dev)
    meter = SegmentationMeter(test.task.num_classes, test.task.ignore_index)
    for batch in DataLoader(test, batch_size=batch_size, collate_fn=collate):
        skipped += batch["errors"]
        if not batch["id"]:
            continue
        inputs = {s: x.to(dev) for s, x in batch["inputs"].items()}
        maps = _block_maps(encoder, inputs, sensor_masks(batch, dev))
        main, _ = head(maps, batch["mask"].shape[-2:])
        meter.update(main.argmax(1).cpu(), batch["mask"])
    return meter.compute()
