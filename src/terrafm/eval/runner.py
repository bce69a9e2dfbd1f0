"""``evaluate``: one protocol on one task with one sensor choice, as a result dictionary.

Protocols (docs/design.md, "Evaluation protocols"): ``knn`` (k = 20 and 5 on frozen features), ``linear`` (Copernicus-Bench
linear probe), ``finetune`` (encoder + linear head), ``seg-linear`` (patch linear probe on 64 px
tiles), ``seg-upernet`` (UPerNet on four block outputs), and ``retrieval`` (cross-sensor retrieval of
the same place on a paired task, :mod:`terrafm.eval.retrieval`). Every knob has the protocol's published
default and can be changed (:class:`EvalSettings`), so tests and CPU demos run in seconds.

Training subsets: ``partition`` names a GEO-Bench label-fraction partition (``0.01x_train``);
``label_fraction`` draws one for any task; ``shots`` takes n training samples per class.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from terrafm.eval.features import (
    Features,
    check_skipped,
    extract_features,
    extract_patch_tokens,
)
from terrafm.eval.finetune import FinetuneSettings, finetune
from terrafm.eval.knn import knn_evaluate
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.eval.retrieval import RETRIEVAL_KS, match_ids, retrieval_metrics
from terrafm.eval.segmentation import (
    SegSettings,
    evaluate_patch_probe,
    evaluate_upernet,
    train_patch_probe,
    train_upernet,
)
from terrafm.eval.subsets import fraction_indices, id_indices, per_class_indices, random_indices
from terrafm.eval.tasks import EvalDataset, EvalTask

__all__ = ["PROTOCOLS", "EvalSettings", "evaluate"]

log = logging.getLogger(__name__)

PROTOCOLS = ("knn", "linear", "finetune", "seg-linear", "seg-upernet", "retrieval")
_SEGMENTATION = ("seg-linear", "seg-upernet")
# protocol -> (epochs, batch size, learning rate, weight decay), the published defaults.
_DEFAULTS = {
    "knn": (0, 64, 0.0, 0.0),
    "linear": (50, 64, 0.1, 1e-4),
    "finetune": (50, 32, 1e-4, 0.05),
    "seg-linear": (50, 64, 1e-3, 0.01),
    "seg-upernet": (50, 16, 1e-3, 0.01),
    "retrieval": (0, 64, 0.0, 0.0),
}


@dataclass
class EvalSettings:
    """Knobs of :func:`evaluate`; ``None`` means the protocol's published default."""

    normalization: str | None = None
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lrs: Sequence[float] | None = None  # fine-tuning: pick the best on the validation split
    weight_decay: float | None = None
    layer_decay: float | None = None
    pooling: str = "cls"
    ks: Sequence[int] = (20, 5)
    label_fraction: float | None = None
    shots: int | None = None
    flips: bool = False  # linear probe: 4 flip views of the cached features
    tile: int = 64
    channels: int = 512
    device: str = "cpu"
    dtype: str | None = None
    cache_dir: str | None = None
    num_workers: int = 0
    on_error: str = "raise"
    missing_sensor: str = "fuse-available"  # or "error": a sample lacking a fused sensor
    max_skipped: float = 0.01
    seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self, protocol: str, task: EvalTask) -> tuple[int, int, float, float]:
        epochs, bs, lr, wd = _DEFAULTS[protocol]
        if protocol == "linear" and task.kind == "multilabel":
            lr = 1.0  # Copernicus-Bench: lr 1.0 for BigEarthNet
        return (
            self.epochs if self.epochs is not None else epochs,
            self.batch_size or bs,
            self.lr if self.lr is not None else lr,
            self.weight_decay if self.weight_decay is not None else wd,
        )


def _settings(settings: EvalSettings | None, overrides: dict[str, Any]) -> EvalSettings:
    s = settings or EvalSettings()
    known = {f.name for f in dataclasses.fields(EvalSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown evaluation setting(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(s, **overrides)


def _check(task: EvalTask, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; available: {list(PROTOCOLS)}")
    if protocol == "retrieval":
        return  # any task kind with two sensor groups (checked by _retrieval_groups)
    if (protocol in _SEGMENTATION) != (task.kind == "segmentation"):
        what = "segmentation" if protocol in _SEGMENTATION else "classification"
        raise ValueError(
            f"protocol {protocol!r} is for {what} tasks; {task.title} is a {task.kind} task"
        )


def _dataset(
    task: EvalTask,
    split: str,
    sensors: Sequence[str],
    s: EvalSettings,
    partition: str | None = None,
) -> EvalDataset:
    return task.dataset(
        split, sensors, normalization=s.normalization, image_size=s.image_size, partition=partition,
        on_error=s.on_error, missing_sensor=s.missing_sensor,
    )  # fmt: skip


def _train_dataset(
    task: EvalTask, sensors: Sequence[str], s: EvalSettings, partition: str | None
) -> EvalDataset:
    """The training split for protocols that read images (a partition, or a random fraction)."""
    train = _dataset(task, "train", sensors, s, partition)
    if s.shots is not None:
        raise ValueError("--shots applies to kNN and the linear probe; use a label fraction here")
    if s.label_fraction is not None and s.label_fraction < 1:
        train = train.select(random_indices(len(train), s.label_fraction, s.seed))
    return train


def _subset_name(partition: str | None, s: EvalSettings) -> str:
    if s.label_fraction is not None and s.label_fraction < 1 and not partition:
        return f"{s.label_fraction:g} of labels (random)"
    return partition or "default"


def _features(
    model: nn.Module, ds: EvalDataset, s: EvalSettings, bs: int, views: int = 1
) -> Features:
    return extract_features(
        model, ds, batch_size=bs, device=s.device, dtype=s.dtype, views=views, cache_dir=s.cache_dir,
        num_workers=s.num_workers, progress=s.progress, max_skipped=s.max_skipped,
    )  # fmt: skip


def _train_subset(
    task: EvalTask, train: Features, partition: str | None, s: EvalSettings
) -> tuple[Features, str]:
    if partition and partition != "default":
        wanted = task.partitions[partition]["train"] if partition in task.partitions else None
        if wanted is None:
            raise ValueError(
                f"task {task.title}: no partition {partition!r}; has {sorted(task.partitions)}"
            )
        present = [w for w in wanted if w in set(train.ids)]
        return train.subset(id_indices(train.ids, present, task.title)), partition
    if s.shots is not None:
        return train.subset(per_class_indices(train.labels, s.shots, s.seed)), f"{s.shots}-shot"
    if s.label_fraction is not None and s.label_fraction < 1:
        return train.subset(
            fraction_indices(train.labels, s.label_fraction, s.seed)
        ), f"{s.label_fraction:g} of labels"
    return train, "default"


def _knn(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], partition: str | None, s: EvalSettings
) -> dict[str, Any]:
    _, bs, _, _ = s.resolved("knn", task)
    train = _features(model, _dataset(task, "train", sensors, s), s, bs)
    test = _features(model, _dataset(task, "test", sensors, s), s, bs)
    train, subset = _train_subset(task, train, partition, s)
    metrics = knn_evaluate(
        train.pooled(s.pooling), train.labels, test.pooled(s.pooling), test.labels, task.num_classes,
        multilabel=task.kind == "multilabel", ks=s.ks,
    )  # fmt: skip
    metric = "micro_f1" if task.kind == "multilabel" else "top1"
    out = {f"{metric}@k{k}": metrics[f"knn{k}"] for k in s.ks}
    out[metric] = metrics[f"knn{s.ks[0]}"]
    return {"metrics": out, "primary": metric, "n_train": len(train), "n_test": len(test), "train_subset": subset,
            "skipped": len(train.skipped) + len(test.skipped)}  # fmt: skip


def _linear(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], partition: str | None, s: EvalSettings
) -> dict[str, Any]:
    epochs, bs, lr, wd = s.resolved("linear", task)
    views = 4 if s.flips else 1
    train = _features(model, _dataset(task, "train", sensors, s), s, 64, views)
    test = _features(model, _dataset(task, "test", sensors, s), s, 64)
    train, subset = _train_subset(task, train, partition, s)
    ml = task.kind == "multilabel"
    probe = train_linear_probe(
        train.pooled(s.pooling, view=None), train.labels, task.num_classes,
        ProbeSettings(epochs, bs, lr, wd, seed=s.seed), multilabel=ml, device=s.device,
    )  # fmt: skip
    metrics = probe_metrics(predict_linear(probe, test.pooled(s.pooling)), test.labels, ml)
    if "val" in task.splits:
        val = _features(model, _dataset(task, "val", sensors, s), s, 64)
        metrics.update(
            {
                f"val_{k}": v
                for k, v in probe_metrics(
                    predict_linear(probe, val.pooled(s.pooling)), val.labels, ml
                ).items()
            }
        )
    primary = "micro_map" if ml else "top1"
    return {"metrics": metrics, "primary": primary, "n_train": len(train), "n_test": len(test), "train_subset": subset,
            "skipped": len(train.skipped) + len(test.skipped)}  # fmt: skip


def _finetune(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], partition: str | None, s: EvalSettings
) -> dict[str, Any]:
    epochs, bs, lr, wd = s.resolved("finetune", task)
    train = _train_dataset(task, sensors, s, partition)
    val = _dataset(task, "val", sensors, s) if "val" in task.splits else None
    test = _dataset(task, "test", sensors, s)
    fs = FinetuneSettings(epochs, bs, lr, wd, layer_decay=s.layer_decay, seed=s.seed)
    res = finetune(model, train, val, test, fs, lrs=s.lrs, device=s.device, progress=s.progress,
                   max_skipped=s.max_skipped)  # fmt: skip
    metrics = dict(res["test"])
    metrics.update({f"val_{k}": v for k, v in (res["val"] or {}).items()})
    primary = "micro_f1" if task.kind == "multilabel" else "top1"
    return {"metrics": metrics, "primary": primary, "n_train": len(train), "n_test": len(test),
            "train_subset": _subset_name(partition, s), "lr": res["lr"], "lr_sweep": res["sweep"],
            "skipped": res["skipped"]}  # fmt: skip


def _class_ious(task: EvalTask, res: dict[str, Any]) -> dict[str, float]:
    out = {"miou": float(res["miou"])}
    for name, v in zip(task.classes, res["per_class_iou"]):
        out["iou_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")] = float(v)
    return out


def _seg_linear(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], partition: str | None, s: EvalSettings
) -> dict[str, Any]:
    epochs, bs, lr, wd = s.resolved("seg-linear", task)
    kw = dict(tile=s.tile, batch_size=64, device=s.device, dtype=s.dtype, cache_dir=s.cache_dir,
              num_workers=s.num_workers, progress=s.progress, max_skipped=s.max_skipped)  # fmt: skip
    train = extract_patch_tokens(model, _train_dataset(task, sensors, s, partition), **kw)  # type: ignore[arg-type]
    test = extract_patch_tokens(model, _dataset(task, "test", sensors, s), **kw)  # type: ignore[arg-type]
    settings = SegSettings(epochs, bs, lr, wd, seed=s.seed)
    patch = int(getattr(model, "patch_size", 16))
    head = train_patch_probe(
        train, task.num_classes, settings, task.ignore_index, patch, s.device, s.progress
    )
    res = evaluate_patch_probe(head, test, task.num_classes, task.ignore_index)
    return {"metrics": _class_ious(task, res), "primary": "miou", "n_train": len(train.ids), "n_test": len(test.ids),
            "train_subset": _subset_name(partition, s), "tile": min(s.tile, test.masks.shape[-1]),
            "skipped": len(train.skipped) + len(test.skipped)}  # fmt: skip


def _seg_upernet(
    model: nn.Module, task: EvalTask, sensors: Sequence[str], partition: str | None, s: EvalSettings
) -> dict[str, Any]:
    epochs, bs, lr, wd = s.resolved("seg-upernet", task)
    train = _train_dataset(task, sensors, s, partition)
    test = _dataset(task, "test", sensors, s)
    settings = SegSettings(epochs, bs, lr, wd, seed=s.seed, channels=s.channels)
    skipped: list[str] = []
    head = train_upernet(model, train, settings, s.device, s.progress, skipped)
    res = evaluate_upernet(model, head, test, bs, s.device, skipped)
    check_skipped(skipped, len(train) + len(test), s.max_skipped)
    return {"metrics": _class_ious(task, res), "primary": "miou", "n_train": len(train), "n_test": len(test),
            "train_subset": _subset_name(partition, s), "skipped": len(set(skipped))}  # fmt: skip


def _group(task: EvalTask, group: Sequence[str] | str) -> tuple[str, ...]:
    return task.resolve_sensors(group)


def _retrieval_groups(
    task: EvalTask, sensors: Sequence[Sequence[str] | str] | str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(query, gallery) sensor groups: given as two groups, or S1 and the task's S2 product."""
    if sensors is None:
        s2 = [s for s in ("s2_l2a", "s2_l1c") if s in task.sensors]
        if "s1" not in task.sensors or not s2:
            raise ValueError(
                f"retrieval on {task.title} needs S1 and S2 for every sample; the task has "
                f"{list(task.sensors)} (give two sensor groups to pair others)"
            )
        return ("s1",), (s2[0],)
    groups = [sensors] if isinstance(sensors, str) else list(sensors)
    if len(groups) == 1 and isinstance(groups[0], str) and ";" in groups[0]:
        groups = groups[0].split(";")
    if len(groups) != 2:
        raise ValueError(
            f"retrieval takes two sensor groups (query, gallery), e.g. ['s1', 's2_l2a']; got {sensors!r}"
        )
    query, gallery = (_group(task, g) for g in groups)
    if query == gallery:
        raise ValueError(f"retrieval: query and gallery are the same sensors {query}")
    return query, gallery


def _retrieval(
    model: nn.Module,
    task: EvalTask,
    groups: tuple[tuple[str, ...], tuple[str, ...]],
    partition: str | None,
    s: EvalSettings,
) -> dict[str, Any]:
    _, bs, _, _ = s.resolved("retrieval", task)
    split = "test"
    query, gallery = (
        _features(model, _dataset(task, split, g, s, partition), s, bs) for g in groups
    )
    qi, gi = match_ids(query.ids, gallery.ids)
    if not qi:
        raise ValueError(f"retrieval on {task.title} {split}: no sample read with both groups")
    names = ("+".join(groups[0]), "+".join(groups[1]))
    metrics = retrieval_metrics(
        query.pooled(s.pooling)[qi], gallery.pooled(s.pooling)[gi], names, RETRIEVAL_KS
    )
    primary = f"r1_{names[0]}_to_{names[1]}"
    return {"metrics": {primary: metrics.pop(primary), **metrics}, "primary": primary,
            "n_train": 0, "n_test": len(qi), "train_subset": f"{split} split, no labels",
            "query": list(groups[0]), "gallery": list(groups[1]),
            "skipped": len(query.skipped) + len(gallery.skipped)}  # fmt: skip


_RUNNERS = {
    "knn": _knn,
    "linear": _linear,
    "finetune": _finetune,
    "seg-linear": _seg_linear,
    "seg-upernet": _seg_upernet,
    "retrieval": _retrieval,
}


def evaluate(
    model: nn.Module,
    task: EvalTask,
    protocol: str,
    sensors: Sequence[str] | str | None = None,
    *,
    partition: str | None = None,
    settings: EvalSettings | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``task`` with ``protocol``.

    Args:
        model: a TerraFM encoder (left unchanged: fine-tuning trains a copy).
        task: from :func:`terrafm.eval.load_task`.
        protocol: one of :data:`PROTOCOLS`.
        sensors: the sensors to feed, e.g. ``"s1"``, ``["s2_l2a"]`` or ``"s1,s2_l2a"`` (fused);
            ``None`` = the task's published choice. ``retrieval`` takes two groups, query then
            gallery (``["s1", "s2_l2a"]``, or ``"s1;s2_l2a"``); ``None`` = S1 and the task's S2.
        partition: a named training partition (GEO-Bench ``0.01x_train`` ...).
        settings: an :class:`EvalSettings`; ``overrides`` replace its fields (``epochs=2`` ...).

    Returns:
        A JSON-ready dict: ``benchmark``, ``task``, ``protocol``, ``sensors``, ``partition``,
        ``metrics`` (percentages), ``primary`` (the headline metric's key), sample counts, the
        resolved settings and the wall time.
    """
    s = _settings(settings, overrides)
    _check(task, protocol)
    chosen: tuple[str, ...]
    what: Any  # the sensors a runner reads: one group, or (query, gallery) for retrieval
    if protocol == "retrieval":
        what = _retrieval_groups(task, sensors)
        chosen = (f"{'+'.join(what[0])}->{'+'.join(what[1])}",)
    else:
        what = chosen = task.resolve_sensors(sensors)
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    result = _RUNNERS[protocol](model, task, what, partition, s)  # type: ignore[operator]
    epochs, bs, lr, wd = s.resolved(protocol, task)
    settings_out = {
        k: v for k, v in dataclasses.asdict(s).items() if k not in ("extra", "progress")
    }
    settings_out.update(epochs=epochs, batch_size=bs, lr=lr, weight_decay=wd,
                        normalization=s.normalization or task.normalization,
                        image_size=s.image_size or task.image_size)  # fmt: skip
    out = {
        "benchmark": task.benchmark,
        "task": task.name,
        "protocol": protocol,
        "sensors": list(chosen),
        "partition": partition or "default",
        **result,
        "settings": settings_out,
        "notes": list(task.notes),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info(
        "%s %s %s: %s = %.2f",
        task.title,
        protocol,
        "+".join(chosen),
        out["primary"],
        out["metrics"][out["primary"]],
    )
    return out
