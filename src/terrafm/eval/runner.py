"""The evaluator: one protocol on one task with one sensor choice, as an :class:`EvalResult`.

:class:`Evaluator` holds one encoder and one task and runs any protocol on them; the frozen features
of each split are extracted once and reused by every protocol that reads them (kNN at several label
fractions, the linear probe, retrieval and the patch probe share them). :func:`evaluate` is one run
of a fresh evaluator. ``terrafm eval``, the suites (:mod:`terrafm.eval.suite`) and the quickstart
(:mod:`terrafm.quickstart.evaluate`) all run through it.

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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
from torch import nn

from terrafm.eval.features import (
    Features,
    PatchFeatures,
    check_skipped,
    extract_features,
    extract_patch_tokens,
)
from terrafm.eval.finetune import FinetuneSettings, finetune
from terrafm.eval.knn import knn_evaluate
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.eval.results import Counts, EvalResult, iou_key
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

__all__ = ["PROTOCOLS", "EvalResult", "EvalSettings", "Evaluator", "evaluate"]

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
    val_metrics: bool = True  # linear probe: the val split's metrics too, when the task has one
    feature_batch: int | None = None  # images per encoder pass; None: kNN/retrieval batch, else 64
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


def _feature_key(s: EvalSettings) -> tuple[Any, ...]:
    """The settings that change extracted features (not the probes' seeds or epochs)."""
    return (s.normalization, s.image_size, s.device, s.dtype, s.on_error, s.missing_sensor)


class _Running(TypedDict):
    """The keyword arguments both extractions take from the settings: where and how, not what."""

    device: str
    dtype: str | None
    cache_dir: str | None
    num_workers: int
    progress: bool
    max_skipped: float


def _extraction_kwargs(s: EvalSettings) -> _Running:
    """The running settings :meth:`Evaluator.features` and :meth:`Evaluator.patch_tokens` pass."""
    return _Running(
        device=s.device, dtype=s.dtype, cache_dir=s.cache_dir, num_workers=s.num_workers,
        progress=s.progress, max_skipped=s.max_skipped,
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


def _class_ious(task: EvalTask, res: dict[str, Any]) -> dict[str, float]:
    out = {"miou": float(res["miou"])}
    for name, v in zip(task.classes, res["per_class_iou"]):
        out[iou_key(name)] = float(v)
    return out


@dataclass
class _Run:
    """What a protocol measured; :meth:`Evaluator.run` adds what every record holds."""

    metrics: dict[str, float]
    primary: str
    counts: Counts
    subset: str
    skipped: int
    details: dict[str, Any] = field(default_factory=dict)


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


class Evaluator:
    """One encoder on one task: runs protocols, extracting each split's features once.

    Args:
        model: a TerraFM encoder, or any module with its ``forward_features`` (left unchanged:
            fine-tuning trains a copy).
        task: from :func:`terrafm.eval.load_task`.
        settings: an :class:`EvalSettings`; ``overrides`` replace its fields (``epochs=2`` ...).

    Frozen features (CLS / mean tokens, and the patch tokens of the patch probe) are kept in
    memory per split, sensors and the settings that change them, so running kNN at several label
    fractions, the linear probe and retrieval on one evaluator costs one encoder pass per split.
    ``cache_dir`` adds the on-disk cache of :func:`~terrafm.eval.features.extract_features`.
    """

    def __init__(
        self,
        model: nn.Module,
        task: EvalTask,
        settings: EvalSettings | None = None,
        **overrides: Any,
    ):
        self.model, self.task = model, task
        self.settings = _settings(settings, overrides)
        self._features: dict[tuple[Any, ...], Features] = {}
        self._patches: dict[tuple[Any, ...], PatchFeatures] = {}

    # ------------------------------------------------------------------ features
    def features(
        self,
        split: str,
        sensors: Sequence[str] | str | None = None,
        *,
        views: int = 1,
        partition: str | None = None,
        batch_size: int | None = None,
        settings: EvalSettings | None = None,
    ) -> Features:
        """The frozen features of one split (extracted on first use, then kept)."""
        s = settings or self.settings
        chosen = self.task.resolve_sensors(sensors)
        bs = batch_size or s.feature_batch or 64
        key = (split, chosen, views, partition, bs, _feature_key(s))
        if key not in self._features:
            ds = _dataset(self.task, split, chosen, s, partition)
            self._features[key] = extract_features(
                self.model, ds, batch_size=bs, views=views, **_extraction_kwargs(s)
            )
        return self._features[key]

    def patch_tokens(
        self,
        split: str,
        sensors: Sequence[str] | str | None = None,
        *,
        partition: str | None = None,
        settings: EvalSettings | None = None,
    ) -> PatchFeatures:
        """The patch tokens of one split cut into ``settings.tile`` tiles (kept after first use).

        The training split honours ``label_fraction`` (a seeded random subset of the images).
        """
        s = settings or self.settings
        chosen = self.task.resolve_sensors(sensors)
        bs = s.feature_batch or 64
        frac = s.label_fraction if split == "train" and s.label_fraction is not None else None
        subset = (frac, s.seed) if frac is not None and frac < 1 else None
        key = (split, chosen, partition, s.tile, bs, subset, _feature_key(s))
        if key not in self._patches:
            if split == "train":
                ds = _train_dataset(self.task, chosen, s, partition)
            else:
                ds = _dataset(self.task, split, chosen, s)
            self._patches[key] = extract_patch_tokens(
                self.model, ds, tile=s.tile, batch_size=bs, **_extraction_kwargs(s)
            )
        return self._patches[key]

    # ------------------------------------------------------------------ protocols
    def run(
        self,
        protocol: str,
        sensors: Sequence[str] | str | None = None,
        *,
        partition: str | None = None,
        test_sensors: Sequence[str] | str | None = None,
        **overrides: Any,
    ) -> EvalResult:
        """Run ``protocol`` and return its :class:`EvalResult`.

        Args:
            protocol: one of :data:`PROTOCOLS`.
            sensors: the sensors to feed, e.g. ``"s1"``, ``["s2_l2a"]`` or ``"s1,s2_l2a"``
                (fused); ``None`` = the task's published choice. ``retrieval`` takes two groups,
                query then gallery (``["s1", "s2_l2a"]``, or ``"s1;s2_l2a"``); ``None`` = S1 and
                the task's S2 product.
            partition: a named training partition (GEO-Bench ``0.01x_train`` ...).
            test_sensors: kNN and linear probe: test on other sensors than those trained on
                (a missing sensor: train on S1 + S2 fused, test on S2 alone).
            overrides: :class:`EvalSettings` fields for this run only.
        """
        s = _settings(self.settings, overrides)
        task = self.task
        _check(task, protocol)
        chosen: tuple[str, ...]
        what: Any  # the sensors a protocol reads: one group, or (query, gallery) for retrieval
        if protocol == "retrieval":
            what = _retrieval_groups(task, sensors)
            chosen = (f"{'+'.join(what[0])}->{'+'.join(what[1])}",)
        else:
            what = chosen = task.resolve_sensors(sensors)
        tested = None
        if test_sensors is not None:
            if protocol not in ("knn", "linear"):
                raise ValueError(f"test_sensors applies to knn and linear, not {protocol!r}")
            tested = task.resolve_sensors(test_sensors)
        t0 = time.perf_counter()
        torch.manual_seed(s.seed)
        if protocol in ("knn", "linear"):
            res = getattr(self, "_" + protocol)(what, partition, s, tested or what)
        else:
            res = getattr(self, "_" + protocol.replace("-", "_"))(what, partition, s)
        if tested is not None:
            res.details["test_sensors"] = list(tested)
        epochs, bs, lr, wd = s.resolved(protocol, task)
        settings_out = {  # JSON-ready: sequences as lists
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(s).items()
            if k not in ("extra", "progress")
        }
        settings_out.update(epochs=epochs, batch_size=bs, lr=lr, weight_decay=wd,
                            normalization=s.normalization or task.normalization,
                            image_size=s.image_size or task.image_size)  # fmt: skip
        out = EvalResult(
            benchmark=task.benchmark,
            task=task.name,
            protocol=protocol,
            sensors=list(chosen),
            partition=partition or "default",
            metrics=res.metrics,
            primary=res.primary,
            counts=res.counts,
            subset=res.subset,
            skipped=res.skipped,
            settings=settings_out,
            notes=list(task.notes),
            seconds=round(time.perf_counter() - t0, 2),
            details=res.details,
        )
        log.info(
            "%s %s %s: %s = %.2f", task.title, protocol, "+".join(chosen), out.primary,
            out.primary_value,
        )  # fmt: skip
        return out

    def _knn(
        self,
        sensors: tuple[str, ...],
        partition: str | None,
        s: EvalSettings,
        test_sensors: tuple[str, ...],
    ) -> _Run:
        task = self.task
        _, bs, _, _ = s.resolved("knn", task)
        batch = s.feature_batch or bs
        train = self.features("train", sensors, batch_size=batch, settings=s)
        test = self.features("test", test_sensors, batch_size=batch, settings=s)
        train, subset = _train_subset(task, train, partition, s)
        metrics = knn_evaluate(
            train.pooled(s.pooling), train.labels, test.pooled(s.pooling), test.labels,
            task.num_classes, multilabel=task.kind == "multilabel", ks=s.ks,
        )  # fmt: skip
        metric = "micro_f1" if task.kind == "multilabel" else "top1"
        out = {f"{metric}@k{k}": metrics[f"knn{k}"] for k in s.ks}
        out[metric] = metrics[f"knn{s.ks[0]}"]
        return _Run(out, metric, Counts(len(train), len(test)), subset,
                    len(train.skipped) + len(test.skipped))  # fmt: skip

    def _linear(
        self,
        sensors: tuple[str, ...],
        partition: str | None,
        s: EvalSettings,
        test_sensors: tuple[str, ...],
    ) -> _Run:
        task = self.task
        epochs, bs, lr, wd = s.resolved("linear", task)
        views = 4 if s.flips else 1
        train = self.features("train", sensors, views=views, settings=s)
        test = self.features("test", test_sensors, settings=s)
        train, subset = _train_subset(task, train, partition, s)
        ml = task.kind == "multilabel"
        probe = train_linear_probe(
            train.pooled(s.pooling, view=None), train.labels, task.num_classes,
            ProbeSettings(epochs, bs, lr, wd, seed=s.seed), multilabel=ml, device=s.device,
        )  # fmt: skip
        metrics = probe_metrics(predict_linear(probe, test.pooled(s.pooling)), test.labels, ml)
        n_val = None
        if s.val_metrics and "val" in task.splits:
            val = self.features("val", test_sensors, settings=s)
            n_val = len(val)
            val_metrics = probe_metrics(
                predict_linear(probe, val.pooled(s.pooling)), val.labels, ml
            )
            metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        primary = "micro_map" if ml else "top1"
        return _Run(metrics, primary, Counts(len(train), len(test), n_val), subset,
                    len(train.skipped) + len(test.skipped))  # fmt: skip

    def _finetune(self, sensors: tuple[str, ...], partition: str | None, s: EvalSettings) -> _Run:
        task = self.task
        epochs, bs, lr, wd = s.resolved("finetune", task)
        train = _train_dataset(task, sensors, s, partition)
        val = _dataset(task, "val", sensors, s) if "val" in task.splits else None
        test = _dataset(task, "test", sensors, s)
        fs = FinetuneSettings(epochs, bs, lr, wd, layer_decay=s.layer_decay, seed=s.seed)
        res = finetune(self.model, train, val, test, fs, lrs=s.lrs, device=s.device,
                       progress=s.progress, max_skipped=s.max_skipped)  # fmt: skip
        metrics = dict(res["test"])
        metrics.update({f"val_{k}": v for k, v in (res["val"] or {}).items()})
        primary = "micro_f1" if task.kind == "multilabel" else "top1"
        counts = Counts(len(train), len(test), None if val is None else len(val))
        return _Run(metrics, primary, counts, _subset_name(partition, s), res["skipped"],
                    {"lr": res["lr"], "lr_sweep": res["sweep"]})  # fmt: skip

    def _seg_linear(self, sensors: tuple[str, ...], partition: str | None, s: EvalSettings) -> _Run:
        task = self.task
        epochs, bs, lr, wd = s.resolved("seg-linear", task)
        train = self.patch_tokens("train", sensors, partition=partition, settings=s)
        test = self.patch_tokens("test", sensors, settings=s)
        settings = SegSettings(epochs, bs, lr, wd, seed=s.seed)
        patch = int(getattr(self.model, "patch_size", 16))
        head = train_patch_probe(
            train, task.num_classes, settings, task.ignore_index, patch, s.device, s.progress
        )
        res = evaluate_patch_probe(head, test, task.num_classes, task.ignore_index)
        return _Run(_class_ious(task, res), "miou", Counts(len(train.ids), len(test.ids)),
                    _subset_name(partition, s), len(train.skipped) + len(test.skipped),
                    {"tile": min(s.tile, test.masks.shape[-1])})  # fmt: skip

    def _seg_upernet(
        self, sensors: tuple[str, ...], partition: str | None, s: EvalSettings
    ) -> _Run:
        task = self.task
        epochs, bs, lr, wd = s.resolved("seg-upernet", task)
        train = _train_dataset(task, sensors, s, partition)
        test = _dataset(task, "test", sensors, s)
        settings = SegSettings(epochs, bs, lr, wd, seed=s.seed, channels=s.channels)
        skipped: list[str] = []
        head = train_upernet(self.model, train, settings, s.device, s.progress, skipped)
        res = evaluate_upernet(self.model, head, test, bs, s.device, skipped)
        check_skipped(skipped, len(train) + len(test), s.max_skipped)
        return _Run(_class_ious(task, res), "miou", Counts(len(train), len(test)),
                    _subset_name(partition, s), len(set(skipped)))  # fmt: skip

    def _retrieval(
        self,
        groups: tuple[tuple[str, ...], tuple[str, ...]],
        partition: str | None,
        s: EvalSettings,
    ) -> _Run:
        task = self.task
        _, bs, _, _ = s.resolved("retrieval", task)
        split = "test"
        query, gallery = (
            self.features(split, g, partition=partition, batch_size=s.feature_batch or bs,
                          settings=s)
            for g in groups
        )  # fmt: skip
        qi, gi = match_ids(query.ids, gallery.ids)
        if not qi:
            raise ValueError(f"retrieval on {task.title} {split}: no sample read with both groups")
        names = ("+".join(groups[0]), "+".join(groups[1]))
        metrics = retrieval_metrics(
            query.pooled(s.pooling)[qi], gallery.pooled(s.pooling)[gi], names, RETRIEVAL_KS
        )
        primary = f"r1_{names[0]}_to_{names[1]}"
        return _Run({primary: metrics.pop(primary), **metrics}, primary, Counts(0, len(qi)),
                    f"{split} split, no labels", len(query.skipped) + len(gallery.skipped),
                    {"query": list(groups[0]), "gallery": list(groups[1])})  # fmt: skip


def evaluate(
    model: nn.Module,
    task: EvalTask,
    protocol: str,
    sensors: Sequence[str] | str | None = None,
    *,
    partition: str | None = None,
    settings: EvalSettings | None = None,
    **overrides: Any,
) -> EvalResult:
    """Evaluate ``model`` on ``task`` with ``protocol``: one run of a fresh :class:`Evaluator`.

    Args:
        model: a TerraFM encoder (left unchanged: fine-tuning trains a copy).
        task: from :func:`terrafm.eval.load_task`.
        protocol: one of :data:`PROTOCOLS`.
        sensors: as :meth:`Evaluator.run`.
        partition: a named training partition (GEO-Bench ``0.01x_train`` ...).
        settings: an :class:`EvalSettings`; ``overrides`` replace its fields (``epochs=2`` ...).

    Returns:
        An :class:`~terrafm.eval.results.EvalResult`: metrics (percentages), the primary metric,
        sample counts, the training subset, skipped samples, the resolved settings and the wall
        time; ``.to_dict()`` is the JSON record.
    """
    return Evaluator(model, task, settings, **overrides).run(protocol, sensors, partition=partition)
