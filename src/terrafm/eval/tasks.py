"""Downstream tasks and the evaluation sample contract (docs/design.md, "Evaluation protocols"; contract D).

Every benchmark reader builds an :class:`EvalTask`: which sensors it holds (with the names and unit
of the raw channels), its splits as lists of :class:`SampleRef`, and a ``load`` function returning a
:class:`RawSample`. :meth:`EvalTask.dataset` turns that into a torch dataset whose items are::

    {"inputs": {sensor: FloatTensor (C, H, W) normalised},   # one key per chosen sensor
     "label": LongTensor () | FloatTensor (K,) multi-hot,     # classification | multi-label
     "mask": LongTensor (H, W),                               # segmentation only
     "id": str}

Per sample: channels are mapped onto the stem by name (:mod:`terrafm.eval.bands`, with the documented
imputation), converted to the stem's unit (S2 DN, S1 dB), z-scored, NaNs set to 0 (the band mean),
and resized to the task's protocol size, a multiple of 16 (bilinear for images, nearest for masks).

Normalisation (``normalization=``):

- ``"model"`` (default): the statistics the encoder was trained with (:mod:`terrafm.sensors`).
- ``"benchmark"``: the benchmark's own published statistics, where it has them (Copernicus-Bench).
- ``"dataset"``: per-band mean/std measured on (a seeded subset of) the training split; the only
  choice for data whose unit is unknown (``unit="scaled"``, e.g. Landslide4Sense).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from terrafm.errors import DataError
from terrafm.eval.bands import DEFAULT_MAX_IMPUTED, BandPlan, plan_bands
from terrafm.sensors import BandError, Stats, get_sensor, linear_to_db, normalize

__all__ = [
    "KINDS",
    "NORMALIZATIONS",
    "EvalDataset",
    "EvalTask",
    "RawSample",
    "SampleError",
    "SampleRef",
    "SensorSpec",
    "round_to_patch",
]

log = logging.getLogger(__name__)

Kind = Literal["classification", "multilabel", "segmentation"]
KINDS = ("classification", "multilabel", "segmentation")
NORMALIZATIONS = ("model", "benchmark", "dataset")
UNITS = {"s1": ("dB", "linear", "scaled"), "s2": ("DN", "reflectance", "scaled")}
# Samples measured for normalization="dataset".
DATASET_STATS_SAMPLES = 256


class SampleError(DataError, ValueError):
    """A sample that cannot be read or does not fit its task (names task, split, sample, file)."""


@dataclass(frozen=True)
class SensorSpec:
    """What a task's raw channels for one sensor are.

    Attributes:
        bands: channel names in the order the reader returns them.
        unit: ``DN`` / ``reflectance`` (x 1e4 to DN) / ``scaled`` for S2; ``dB`` / ``linear`` /
            ``scaled`` for S1. ``scaled`` = unknown unit: needs ``normalization="dataset"``.
        max_imputed: most stem bands that may be imputed (:func:`terrafm.eval.bands.plan_bands`).
    """

    bands: tuple[str, ...]
    unit: str = "DN"
    max_imputed: int = DEFAULT_MAX_IMPUTED


@dataclass(frozen=True)
class SampleRef:
    """One sample of a split: a unique id, the reader's key, and its label when known up front."""

    id: str
    key: Any
    label: Any = None


@dataclass
class RawSample:
    """What a reader returns: raw channels per sensor, and the target."""

    images: dict[str, np.ndarray]  # sensor -> (C, H, W) in SensorSpec order and unit
    label: Any = None  # int class index | sequence of class indices (multi-label) | None
    mask: np.ndarray | None = None  # (H, W) class index per pixel, ignore_index where unlabelled


def _ids_digest(refs: Sequence[SampleRef]) -> str:
    return hashlib.sha1("\n".join(r.id for r in refs).encode()).hexdigest()[:16]


def round_to_patch(size: int, patch: int = 16) -> int:
    """The multiple of ``patch`` nearest to ``size``, halves rounded up (at least one patch)."""
    return max(patch, math.floor(size / patch + 0.5) * patch)


@dataclass
class EvalTask:
    """A downstream task: sensors, splits and a reader.

    Attributes:
        benchmark: ``geobench``, ``copernicus``, ``landslide4sense``, ``eurosat`` or ``folder``.
        name: task name within the benchmark.
        kind: ``classification``, ``multilabel`` or ``segmentation``.
        classes: class names (their index is the label).
        sensors: sensor key -> raw channel description.
        splits: split name (``train``/``val``/``test``) -> samples.
        load: reads one sample: ``load(ref, sensors=None)``, ``sensors`` naming the images wanted
            (readers may return more).
        root: where the data lies (part of the feature-cache key).
        image_size: the protocol's input size (multiple of 16); ``None`` = native, rounded to 16.
        ignore_index: mask value excluded from losses and metrics.
        default_sensors: the sensors the published protocol feeds.
        partitions: named train/val/test id lists (GEO-Bench label fractions).
        stats: the benchmark's published normalisation statistics (stem order, stem unit).
        normalization: the default normalisation mode for this task.
        notes: facts worth reporting (errata applied, imputations, choices).
    """

    benchmark: str
    name: str
    kind: Kind
    classes: list[str]
    sensors: dict[str, SensorSpec]
    splits: dict[str, list[SampleRef]]
    load: Callable[..., RawSample]
    root: Path
    image_size: int | None = None
    ignore_index: int = 255
    default_sensors: tuple[str, ...] = ()
    partitions: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    stats: dict[str, Stats] = field(default_factory=dict)
    normalization: str = "model"
    notes: list[str] = field(default_factory=list)
    _plans: dict[str, BandPlan] = field(default_factory=dict, repr=False)
    _dataset_stats: dict[str, Stats] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        for key, spec in self.sensors.items():
            family = "s1" if key == "s1" else "s2"
            get_sensor(key)
            if spec.unit not in UNITS[family]:
                raise BandError(
                    f"task {self.name!r}, sensor {key!r}: unit {spec.unit!r} not one of {UNITS[family]}"
                )
        if not self.default_sensors:
            self.default_sensors = tuple(self.sensors)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def title(self) -> str:
        return f"{self.benchmark}/{self.name}"

    def plan(self, sensor: str) -> BandPlan:
        """The band plan of ``sensor`` (computed once; a clear error if unmappable)."""
        if sensor not in self.sensors:
            raise BandError(
                f"task {self.title} has no {sensor!r} data; available sensors: {list(self.sensors)}"
            )
        if sensor not in self._plans:
            spec = self.sensors[sensor]
            try:
                plan = plan_bands(sensor, spec.bands, spec.max_imputed)
            except BandError as e:
                raise BandError(f"task {self.title}: {e}") from e
            if plan.imputed or plan.ignored:
                log.info("task %s: %s", self.title, plan.describe())
            self._plans[sensor] = plan
        return self._plans[sensor]

    def resolve_sensors(self, sensors: Sequence[str] | str | None) -> tuple[str, ...]:
        """Validate a sensor choice (a list or a comma-separated string)."""
        if sensors is None:
            return tuple(self.default_sensors)
        if isinstance(sensors, str):
            sensors = [s.strip() for s in sensors.split(",") if s.strip()]
        chosen = tuple(sensors)
        if not chosen:
            raise BandError(f"task {self.title}: no sensor chosen")
        for s in chosen:
            self.plan(s)
        return chosen

    def split_refs(self, split: str, partition: str | None = None) -> list[SampleRef]:
        """The samples of a split, optionally restricted to a named partition's ids."""
        if split not in self.splits:
            raise ValueError(f"task {self.title}: no split {split!r}; has {list(self.splits)}")
        refs = self.splits[split]
        if partition is None or partition == "default":
            return refs
        if partition not in self.partitions:
            raise ValueError(
                f"task {self.title}: no partition {partition!r}; has {sorted(self.partitions)}"
            )
        keep = set(self.partitions[partition].get(split, []))
        return [r for r in refs if r.id in keep]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this task's data for the feature cache."""
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "root": str(Path(self.root).resolve()),
            "sensors": {k: [list(v.bands), v.unit] for k, v in self.sensors.items()},
            "splits": {k: _ids_digest(v) for k, v in self.splits.items()},
            "partitions": sorted(self.partitions),
        }

    def dataset(
        self,
        split: str,
        sensors: Sequence[str] | str | None = None,
        *,
        normalization: str | None = None,
        image_size: int | None = None,
        partition: str | None = None,
        on_error: str = "raise",
        missing_sensor: str = "fuse-available",
    ) -> EvalDataset:
        """The torch dataset of one split (items as in the module docstring)."""
        return EvalDataset(
            self,
            split,
            self.resolve_sensors(sensors),
            normalization=normalization or self.normalization,
            image_size=image_size,
            partition=partition,
            on_error=on_error,
            missing_sensor=missing_sensor,
        )

    # ------------------------------------------------------------ normalisation
    def stats_for(self, sensor: str, normalization: str) -> Stats:
        """The z-score statistics (stem order, stem unit) for a normalisation mode."""
        if normalization == "model":
            if self.sensors[sensor].unit == "scaled":
                raise BandError(
                    f"task {self.title}: {sensor!r} data is in an unknown unit ('scaled'), so the "
                    "encoder's statistics do not apply; use normalization='dataset'"
                )
            return get_sensor(sensor).stats
        if normalization == "benchmark":
            if sensor not in self.stats:
                raise BandError(
                    f"task {self.title}: the benchmark publishes no statistics for {sensor!r}; "
                    "use normalization='model' or 'dataset'"
                )
            return self.stats[sensor]
        if normalization == "dataset":
            if sensor not in self._dataset_stats:
                self._dataset_stats[sensor] = self._measure_stats(sensor)
            return self._dataset_stats[sensor]
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    def _measure_stats(self, sensor: str) -> Stats:
        refs = self.splits.get("train") or next(iter(self.splits.values()))
        rng = np.random.default_rng(0)
        pick = rng.permutation(len(refs))[:DATASET_STATS_SAMPLES]
        total = np.zeros(get_sensor(sensor).num_bands)
        total_sq = np.zeros_like(total)
        count = 0
        for i in sorted(pick.tolist()):
            x = self.stem_units(sensor, self.load(refs[i], (sensor,)).images[sensor], refs[i])
            flat = x.reshape(x.shape[0], -1).astype(np.float64)
            flat = np.where(np.isfinite(flat), flat, np.nan)
            total += np.nansum(flat, 1)
            total_sq += np.nansum(flat**2, 1)
            count += int(np.isfinite(flat[0]).sum())
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 1e-12))
        log.info(
            "task %s: measured %s statistics on %d train samples", self.title, sensor, len(pick)
        )
        return Stats(tuple(mean.tolist()), tuple(std.tolist()), f"{self.title} train split")

    def stem_units(self, sensor: str, raw: np.ndarray, ref: SampleRef) -> np.ndarray:
        """Raw channels -> stem bands in the stem's unit (S2 DN, S1 dB), float32."""
        try:
            x = self.plan(sensor).apply(np.asarray(raw)).astype(np.float32)
        except BandError as e:
            raise SampleError(f"{self.title}: sample {ref.id} ({ref.key}): {e}") from e
        unit = self.sensors[sensor].unit
        if unit == "reflectance":
            x = x * 10000.0
        elif unit == "linear":
            x = np.asarray(linear_to_db(x), dtype=np.float32)
        return x


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(C, H, W) -> (C, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    if mode == "nearest":
        return F.interpolate(x[None].float(), size=(size, size), mode="nearest")[0]
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]


class EvalDataset(Dataset):
    """One split of a task as contract-D samples (see the module docstring).

    With ``on_error="skip"`` a sample that cannot be read yields ``{"error": message, "id": id}``
    instead of raising; :func:`terrafm.eval.features.collate` drops and counts those.

    With several sensors, a sample that lacks one of them (no image, or no finite value in it) is,
    with ``missing_sensor="fuse-available"``, embedded from the sensors it has: the absent sensor's
    input is zeros and the item carries ``"masks": {sensor: bool}`` for the model's per-sample
    sensor masks. With ``missing_sensor="error"`` (and always with one sensor) it is a
    :class:`SampleError` naming the sample and the sensor.
    """

    def __init__(
        self,
        task: EvalTask,
        split: str,
        sensors: tuple[str, ...],
        *,
        normalization: str = "model",
        image_size: int | None = None,
        partition: str | None = None,
        on_error: str = "raise",
        missing_sensor: str = "fuse-available",
    ):
        if missing_sensor not in ("fuse-available", "error"):
            raise ValueError(
                f"missing_sensor must be 'fuse-available' or 'error', got {missing_sensor!r}"
            )
        self.missing_sensor = missing_sensor
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.task = task
        self.split = split
        self.sensors = sensors
        self.normalization = normalization
        size = image_size or task.image_size
        if size is not None and size % 16:
            raise ValueError(f"image size must be a multiple of 16, got {size}")
        self.image_size = size
        self.refs = task.split_refs(split, partition)
        self.on_error = on_error
        self.stats = {s: task.stats_for(s, normalization) for s in sensors}

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.refs]

    def select(self, indices: Sequence[int]) -> EvalDataset:
        """The same dataset restricted to ``indices`` (a seeded label fraction, say)."""
        out = copy.copy(self)
        out.refs = [self.refs[i] for i in indices]
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        ref = self.refs[i]
        try:
            return self._item(ref)
        except Exception as e:
            msg = (
                str(e)
                if isinstance(e, SampleError)
                else (
                    f"{self.task.title}/{self.split}: sample {ref.id} ({ref.key}): "
                    f"{type(e).__name__}: {e}"
                )
            )
            if self.on_error == "skip":
                return {"error": msg, "id": ref.id}
            raise SampleError(msg) from e

    def _item(self, ref: SampleRef) -> dict[str, Any]:
        raw = self.task.load(ref, self.sensors)
        size = self.image_size
        inputs: dict[str, torch.Tensor] = {}
        fuse = self.missing_sensor == "fuse-available" and len(self.sensors) > 1
        absent = []
        for s in self.sensors:
            where = f"{self.task.title}: sample {ref.id} ({ref.key})"
            x = self.task.stem_units(s, raw.images[s], ref) if s in raw.images else None
            if x is None or not np.isfinite(x).any():
                if not fuse:
                    what = (
                        f"has no {s} image"
                        if x is None
                        else f"has no finite value in its {s} image"
                    )
                    raise SampleError(f"{where} {what}")
                absent.append(s)
                continue
            t = normalize(torch.from_numpy(x), s, None, stats=self.stats[s])
            t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
            if size is None:
                size = round_to_patch(max(t.shape[-2:]))
            inputs[s] = _resize(t, size, "bilinear")  # (C, S, S)
        if len(absent) == len(self.sensors):
            raise SampleError(
                f"{self.task.title}: sample {ref.id} ({ref.key}) has none of the sensors "
                f"{list(self.sensors)} (no image or no finite value)"
            )
        item: dict[str, Any] = {"id": ref.id}
        if fuse:
            assert size is not None
            for s in absent:  # zeros: the masks keep them out of the fusion
                inputs[s] = torch.zeros(get_sensor(s).num_bands, size, size)
            item["masks"] = {s: s not in absent for s in self.sensors}
        item["inputs"] = {s: inputs[s] for s in self.sensors}
        label = ref.label if ref.label is not None else raw.label
        if self.task.kind == "classification":
            item["label"] = torch.tensor(int(label), dtype=torch.long)
        elif self.task.kind == "multilabel":
            item["label"] = self._multi_hot(label, ref)
        else:
            if raw.mask is None:
                raise SampleError(f"{self.task.title}: sample {ref.id} ({ref.key}) has no mask")
            m = torch.from_numpy(np.asarray(raw.mask, dtype=np.int64))[None]
            assert size is not None
            item["mask"] = _resize(m, size, "nearest")[0].long()  # (S, S)
        return item

    def _multi_hot(self, label: Any, ref: SampleRef) -> torch.Tensor:
        """A numpy array is already multi-hot (K,); a list/tuple holds class indices."""
        k = self.task.num_classes
        if isinstance(label, np.ndarray):
            if label.shape != (k,):
                raise SampleError(
                    f"{self.task.title}: sample {ref.id}: multi-hot label of shape "
                    f"{label.shape}, expected ({k},)"
                )
            return torch.as_tensor(label.astype(np.float32))
        hot = torch.zeros(k)
        for c in label:
            if not 0 <= int(c) < k:
                raise SampleError(
                    f"{self.task.title}: sample {ref.id}: class {c} out of 0..{k - 1}"
                )
            hot[int(c)] = 1.0
        return hot
