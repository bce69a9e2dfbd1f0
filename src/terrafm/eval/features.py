"""Frozen-encoder features shared by every protocol, cached on disk.

Protocols: docs/design.md, "Evaluation protocols"; the cache key uses the model fingerprint of
docs/design.md, "Weights".

:func:`extract_features` runs the encoder over a split in batches (optionally under bfloat16
autocast) and keeps, per sample, the normed CLS token and the mean of the normed patch tokens.
:func:`extract_patch_tokens` cuts every image into square tiles (64 px for the GEO-Bench
segmentation probe) and keeps each tile's patch tokens and mask.

Results are cached as ``.safetensors`` files (written atomically) keyed by a hash of the model's
weights and configuration, the task's data (benchmark, name, root, band layout, split ids), the
split, partition, sensors, normalisation, image size, feature kind and dtype: asking twice costs
one extraction, and any change of weights or data misses the cache.

With ``views=4`` the features of the four flips of every image are kept too (identity, horizontal,
vertical, both): a probe on frozen features can then use flip augmentation exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from terrafm.errors import DataError
from terrafm.eval.tasks import EvalDataset
from terrafm.outputs import atomic_write
from terrafm.weights.fingerprint import model_fingerprint

__all__ = [
    "POOLINGS",
    "Features",
    "PatchFeatures",
    "check_skipped",
    "collate",
    "encode",
    "extract_features",
    "extract_patch_tokens",
    "flip_batch",
    "flip_view",
    "sensor_masks",
]

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "cls+mean")
CACHE_VERSION = 1


def flip_view(x: torch.Tensor, view: int) -> torch.Tensor:
    """View 0 identity, 1 horizontal flip, 2 vertical flip, 3 both (on the last two dims)."""
    dims = [d for d, on in ((-1, view & 1), (-2, view & 2)) if on]
    return x.flip(dims) if dims else x


def flip_batch(x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Flip each sample of (B, ..., H, W) by its own view (B,) (see :func:`flip_view`)."""
    return torch.stack([flip_view(xi, int(v)) for xi, v in zip(x, views)])


def sensor_masks(
    batch: dict[str, Any], device: torch.device | str
) -> dict[str, torch.Tensor] | None:
    """The batch's per-sample sensor masks on ``device``, or None when every sample has every
    sensor (so encoders without masks, like the baselines, run as before)."""
    masks = batch.get("masks")
    if masks is None or all(bool(m.all()) for m in masks.values()):
        return None
    return {s: m.to(device) for s, m in masks.items()}


def encode(
    model: nn.Module, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """``model.forward_features(inputs)``, with per-sample sensor masks when some are absent."""
    if masks is None:
        return model.forward_features(inputs)  # type: ignore[operator]
    return model.forward_features(inputs, masks=masks)  # type: ignore[operator]


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack contract-D samples; items that failed to load (``"error"``) are dropped and listed."""
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {"errors": [it["error"] for it in items if "error" in it]}
    batch["id"] = [it["id"] for it in good]
    if not good:
        return batch
    batch["inputs"] = {s: torch.stack([it["inputs"][s] for it in good]) for s in good[0]["inputs"]}
    if "masks" in good[0]:  # fused sensors: which ones each sample has
        batch["masks"] = {
            s: torch.tensor([bool(it["masks"][s]) for it in good]) for s in good[0]["masks"]
        }
    for key in ("label", "mask"):
        if key in good[0]:
            batch[key] = torch.stack([it[key] for it in good])
    return batch


@dataclass
class Features:
    """Per-sample features of one split.

    Attributes:
        ids: sample ids, in dataset order (failed samples left out).
        cls: (V, N, D) normed CLS tokens; V = 1, or 4 flip views.
        mean: (V, N, D) mean of the normed patch tokens.
        labels: (N,) class indices or (N, K) multi-hot.
        skipped: messages of samples that could not be read.
    """

    ids: list[str]
    cls: torch.Tensor
    mean: torch.Tensor
    labels: torch.Tensor
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def pooled(self, pooling: str = "cls", view: int | None = 0) -> torch.Tensor:
        """(N, D') features of one view (``view=None``: all views, (V, N, D'))."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        parts = {"cls": [self.cls], "mean": [self.mean], "cls+mean": [self.cls, self.mean]}[pooling]
        out = torch.cat(parts, -1)
        return out if view is None else out[view]

    def subset(self, index: Sequence[int] | torch.Tensor) -> Features:
        idx = torch.as_tensor(index, dtype=torch.long)
        return Features(
            [self.ids[i] for i in idx.tolist()],
            self.cls[:, idx],
            self.mean[:, idx],
            self.labels[idx],
            self.skipped,
        )


@dataclass
class PatchFeatures:
    """Patch tokens of square tiles.

    Attributes:
        tokens: (T, g*g, D) float16 patch tokens of each tile (g = tile / 16).
        masks: (T, tile, tile) long target masks.
        ids: ``<sample id>#<tile index>`` per tile.
        skipped: messages of samples that could not be read.
    """

    tokens: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def grid(self) -> int:
        return int(round(self.tokens.shape[1] ** 0.5))


def _cache_key(model_fp: str, dataset: EvalDataset, kind: str, extra: dict[str, Any]) -> str:
    spec = {
        "version": CACHE_VERSION,
        "model": model_fp,
        "task": dataset.task.fingerprint(),
        "split": dataset.split,
        "ids": hashlib.sha1("\n".join(dataset.ids).encode()).hexdigest(),
        "sensors": list(dataset.sensors),
        "normalization": dataset.normalization,
        "image_size": dataset.image_size,
        "missing_sensor": getattr(dataset, "missing_sensor", "fuse-available"),
        "kind": kind,
        **extra,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _cache_path(cache_dir: Path, dataset: EvalDataset, kind: str, key: str) -> Path:
    t = dataset.task
    name = f"{t.benchmark}-{t.name}-{dataset.split}-{'+'.join(dataset.sensors)}-{kind}-{key[:16]}"
    return cache_dir / f"{name}.safetensors"


def _load_cached(path: Path, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a damaged cache file is recomputed, not trusted
        log.warning("feature cache %s unreadable (%s); recomputing", path, e)
        return None
    return tensors, {k: json.loads(v) for k, v in meta.items() if k != "key"}


def _save_cached(
    path: Path, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    encoded = {k: json.dumps(v) for k, v in meta.items()}
    encoded["key"] = key
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=encoded)


def _loader(dataset: EvalDataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )


def _autocast(device: torch.device, dtype: str | None) -> Any:
    if dtype in (None, "float32"):
        return torch.autocast(device.type, enabled=False)
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


class TooManySkippedError(DataError, RuntimeError):
    """More unreadable samples than allowed (or none readable); names the first."""


def check_skipped(skipped: list[str], total: int, max_skipped: float) -> None:
    """Log every skipped sample once; fail when more than ``max_skipped`` of ``total`` were."""
    unique = sorted(set(skipped))
    for msg in unique:
        log.warning("skipped: %s", msg)
    if unique and len(unique) > max_skipped * total:
        raise TooManySkippedError(
            f"{len(unique)} of {total} samples could not be read (more than {max_skipped:.0%}); "
            f"first: {unique[0]}"
        )


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    dataset: EvalDataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    views: int = 1,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    progress: bool = True,
    max_skipped: float = 0.01,
) -> Features:
    """CLS and mean-patch features of every sample of ``dataset`` (see the module docstring).

    Args:
        model: a TerraFM encoder (any module with ``forward_features(inputs)``).
        dataset: from :meth:`EvalTask.dataset` (``on_error="skip"`` to skip unreadable samples).
        batch_size: images per forward pass.
        device: where the encoder runs.
        dtype: ``"bfloat16"`` for autocast, ``None``/``"float32"`` for full precision.
        views: 1, or 4 to also keep the features of the flipped images.
        cache_dir: where features are cached (``None``: no cache).
        num_workers: data-loading processes.
        progress: show a progress bar.
        max_skipped: fraction of unreadable samples above which extraction fails.
    """
    if views not in (1, 4):
        raise ValueError(f"views must be 1 or 4, got {views}")
    key = path = None
    if cache_dir is not None:
        key = _cache_key(
            model_fingerprint(model), dataset, "pooled", {"dtype": dtype, "views": views}
        )
        path = _cache_path(Path(cache_dir), dataset, "pooled", key)
        hit = _load_cached(path, key)
        if hit is not None:
            t, meta = hit
            log.info("features from cache %s", path)
            return Features(meta["ids"], t["cls"], t["mean"], t["labels"], meta["skipped"])
    dev = torch.device(device)
    model.eval().to(dev)
    ids: list[str] = []
    skipped: list[str] = []
    cls_parts: list[torch.Tensor] = []
    mean_parts: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    bar = tqdm(
        total=len(dataset),
        desc=f"features {dataset.task.name}/{dataset.split}",
        disable=not progress,
    )
    for batch in _loader(dataset, batch_size, num_workers):
        skipped += batch["errors"]
        bar.update(len(batch["id"]) + len(batch["errors"]))
        if not batch["id"]:
            continue
        c_views, m_views = [], []
        masks = sensor_masks(batch, dev)
        for v in range(views):
            inputs = {s: flip_view(x, v).to(dev) for s, x in batch["inputs"].items()}
            with _autocast(dev, dtype):
                out = encode(model, inputs, masks)
            c_views.append(out["x_norm_clstoken"].float().cpu())  # (B, D)
            m_views.append(out["x_norm_patchtokens"].float().mean(1).cpu())  # (B, D)
        cls_parts.append(torch.stack(c_views))  # (V, B, D)
        mean_parts.append(torch.stack(m_views))
        labels.append(batch["label"])
        ids += batch["id"]
    bar.close()
    check_skipped(skipped, len(dataset), max_skipped)
    if not ids:
        raise TooManySkippedError(
            f"no sample of {dataset.task.title}/{dataset.split} could be read"
            + (f"; first: {skipped[0]}" if skipped else "")
        )
    feats = Features(
        ids, torch.cat(cls_parts, 1), torch.cat(mean_parts, 1), torch.cat(labels), skipped
    )
    if path is not None and key is not None:
        tensors = {"cls": feats.cls, "mean": feats.mean, "labels": feats.labels}
        _save_cached(path, key, tensors, {"ids": ids, "skipped": skipped})
    return feats


def _tiles(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * nh * nw, C, tile, tile), row-major tiles of each image."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // tile, tile, w // tile, tile).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, c, tile, tile)


@torch.inference_mode()
def extract_patch_tokens(
    model: nn.Module,
    dataset: EvalDataset,
    *,
    tile: int = 64,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    progress: bool = True,
    max_skipped: float = 0.01,
) -> PatchFeatures:
    """Patch tokens and masks of ``tile`` x ``tile`` tiles of every image (segmentation probe).

    ``tile`` must divide the dataset's image size and be a multiple of 16; images smaller than
    ``tile`` are used whole.
    """
    size = dataset.image_size
    if size is None:
        raise ValueError("patch-token extraction needs a fixed image size (set image_size)")
    tile = min(tile, size)
    if size % tile or tile % 16:
        raise ValueError(f"tile {tile} must be a multiple of 16 dividing the image size {size}")
    key = path = None
    if cache_dir is not None:
        key = _cache_key(model_fingerprint(model), dataset, "patch", {"dtype": dtype, "tile": tile})
        path = _cache_path(Path(cache_dir), dataset, f"patch{tile}", key)
        hit = _load_cached(path, key)
        if hit is not None:
            t, meta = hit
            log.info("patch tokens from cache %s", path)
            return PatchFeatures(t["tokens"], t["masks"], meta["ids"], meta["skipped"])
    dev = torch.device(device)
    model.eval().to(dev)
    tokens, masks, ids, skipped = [], [], [], []
    per_image = (size // tile) ** 2
    bar = tqdm(
        total=len(dataset),
        desc=f"patch tokens {dataset.task.name}/{dataset.split}",
        disable=not progress,
    )
    for batch in _loader(dataset, max(1, batch_size // per_image), num_workers):
        skipped += batch["errors"]
        bar.update(len(batch["id"]) + len(batch["errors"]))
        if not batch["id"]:
            continue
        inputs = {s: _tiles(x, tile).to(dev) for s, x in batch["inputs"].items()}
        present = sensor_masks(batch, dev)
        if present is not None:  # each image's masks for each of its tiles
            present = {s: m.repeat_interleave(per_image) for s, m in present.items()}
        with _autocast(dev, dtype):
            out = encode(model, inputs, present)
        tokens.append(out["x_norm_patchtokens"].to(torch.float16).cpu())  # (T, g*g, D)
        masks.append(_tiles(batch["mask"][:, None], tile)[:, 0])  # (T, tile, tile)
        ids += [f"{i}#{j}" for i in batch["id"] for j in range(per_image)]
    bar.close()
    check_skipped(skipped, len(dataset), max_skipped)
    if not ids:
        raise TooManySkippedError(
            f"no sample of {dataset.task.title}/{dataset.split} could be read"
            + (f"; first: {skipped[0]}" if skipped else "")
        )
    feats = PatchFeatures(torch.cat(tokens), torch.cat(masks), ids, skipped)
    if path is not None and key is not None:
        _save_cached(
            path,
            key,
            {"tokens": feats.tokens, "masks": feats.masks},
            {"ids": ids, "skipped": skipped},
        )
    return feats
