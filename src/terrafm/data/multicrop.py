"""Multi-crop views with sensors as augmentation, and their collate (docs/design.md, "Objective", contract B).

Per tile: ``n_global`` global random-resized crops (scale 0.25–1.0 -> 224 px) and ``n_local`` local
ones (scale 0.05–0.25 -> 96 px). One crop box and one flip decision are applied to all co-registered
sensors at once. Each view then picks its sensors, independently for the teacher (global views)
and the student (the same global crops plus the local ones):

- ``independent`` (default **choice**): each available sensor kept with probability ``keep_p``,
  at least one (a draw with none is redrawn, so every non-empty subset is equally likely at 0.5);
- ``all_or_one``: with probability ``keep_p`` all available sensors (fusion), else one at random;
- ``one``: exactly one available sensor, uniformly (sensors as augmentation without fusion);
- ``all``: always every available sensor (no modality augmentation, for ablations).

Randomness comes only from the generator passed in, which the dataset seeds from
``(seed, epoch, position, index)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terrafm.sensors import get_sensor

__all__ = [
    "RESAMPLES",
    "SENSOR_DRAWS",
    "MultiCrop",
    "MultiCropConfig",
    "ViewPlan",
    "collate_views",
    "crop_views",
    "draw_sensors",
    "plan_views",
    "random_resized_box",
    "resize",
]

SENSOR_DRAWS = ("independent", "all_or_one", "one", "all")
RESAMPLES = ("antialias", "bilinear")
Box = tuple[int, int, int, int]  # (top, left, height, width)


@dataclass(frozen=True)
class MultiCropConfig:
    """Sizes and probabilities of the views (defaults: docs/design.md, "Objective").

    Attributes:
        global_size: side of global views (multiple of 16).
        local_size: side of local views (multiple of 16).
        n_global: number of global views (the DINO loss expects 2).
        n_local: number of local views (8 is a **choice**).
        global_scale: area fraction range of global crops.
        local_scale: area fraction range of local crops.
        ratio: aspect-ratio range of crop boxes.
        flip_p: probability of a horizontal flip per view.
        sensor_draw: ``independent``, ``all_or_one``, ``one`` or ``all``.
        keep_p: the 0.5 of the sensor draw rules.
        resample: ``antialias`` (bilinear widened by the shrink factor, the default) or
            ``bilinear`` (plain bilinear: about 3x less CPU, aliases when shrinking by more
            than ~1.5x; docs/data.md, "Resampling").
    """

    global_size: int = 224
    local_size: int = 96
    n_global: int = 2
    n_local: int = 8
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    sensor_draw: str = "independent"
    keep_p: float = 0.5
    resample: str = "antialias"

    def __post_init__(self) -> None:
        for name in ("global_size", "local_size"):
            v = getattr(self, name)
            if v <= 0 or v % 16:
                raise ValueError(f"{name} must be a positive multiple of 16 (patch size), got {v}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {(lo, hi)}")
        if self.sensor_draw not in SENSOR_DRAWS:
            raise ValueError(f"sensor_draw must be one of {SENSOR_DRAWS}, got {self.sensor_draw!r}")
        if self.n_global < 1 or self.n_local < 0:
            raise ValueError("need n_global >= 1 and n_local >= 0")
        if self.resample not in RESAMPLES:
            raise ValueError(f"resample must be one of {RESAMPLES}, got {self.resample!r}")
        if not 0 < self.keep_p <= 1 or not 0 <= self.flip_p <= 1:
            raise ValueError("keep_p must be in (0, 1] and flip_p in [0, 1]")


def random_resized_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random crop box of area fraction in ``scale`` and aspect ratio in ``ratio``.

    The usual random-resized-crop rule: ten tries of a log-uniform ratio, then a centre crop
    clamped to the ratio range.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def draw_sensors(
    rng: np.random.Generator,
    available: Sequence[str],
    mode: str = "independent",
    keep_p: float = 0.5,
) -> tuple[str, ...]:
    """The sensors one view uses, drawn from ``available`` by rule ``mode`` (module docstring)."""
    if not available:
        raise ValueError("no sensor available to draw from")
    if mode == "all" or len(available) == 1:
        return tuple(available)
    if mode == "one":
        return (available[int(rng.integers(len(available)))],)
    if mode == "all_or_one":
        if rng.random() < keep_p:
            return tuple(available)
        return (available[int(rng.integers(len(available)))],)
    if mode != "independent":
        raise ValueError(f"sensor draw must be one of {SENSOR_DRAWS}, got {mode!r}")
    while True:
        keep = rng.random(len(available)) < keep_p
        if keep.any():
            return tuple(s for s, k in zip(available, keep) if k)


def resize(x: torch.Tensor, size: int, resample: str = "antialias") -> torch.Tensor:
    """(N, C, h, w) -> (N, C, size, size), pixel centres aligned (``align_corners=False``):
    bilinear with antialiasing (``resample="antialias"``) or plain bilinear (``"bilinear"``).
    The one resize of both data paths (parquet and shards)."""
    if resample not in RESAMPLES:
        raise ValueError(f"resample must be one of {RESAMPLES}, got {resample!r}")
    return F.interpolate(
        x,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=resample == "antialias",
    )


def crop_views(
    inputs: Mapping[str, torch.Tensor],
    box: Box,
    size: int,
    flip: bool,
    sensors: Sequence[str] | None = None,
    resample: str = "antialias",
) -> dict[str, torch.Tensor]:
    """Cut one box from every sensor at once, resize to ``size`` and optionally flip.

    The sensors' crops are stacked along channels and resized together, so they get exactly the
    same geometry; resizing is :func:`resize` (bilinear, antialiased by default).

    Args:
        inputs: sensor -> (C_s, H, W), all on the same grid.
        box: (top, left, height, width).
        size: output side.
        flip: flip horizontally.
        sensors: the sensors to cut (default: all of ``inputs``).
        resample: see :func:`resize`.

    Returns:
        sensor -> (C_s, size, size).
    """
    keys = list(sensors if sensors is not None else inputs)
    top, left, h, w = box
    stack = torch.cat([inputs[k][:, top : top + h, left : left + w] for k in keys])  # (ΣC, h, w)
    out = resize(stack[None], size, resample)[0]
    if flip:
        out = out.flip(-1)
    return dict(zip(keys, out.split([inputs[k].shape[0] for k in keys])))


class MultiCrop:
    """Turns one tile (sensor -> normalised (C, T, T)) into teacher and student views.

    Returns a dict of lists of per-sample views ``{"inputs": {sensor: (C, S, S)}, "sensors":
    tuple}`` (only the chosen sensors; :func:`collate_views` adds zeros and masks). Sensors are
    drawn before cropping so that only the sensors a view uses are resized.
    """

    def __init__(self, config: MultiCropConfig) -> None:
        self.cfg = config

    def __call__(
        self, inputs: Mapping[str, torch.Tensor], rng: np.random.Generator
    ) -> dict[str, list[dict[str, object]]]:
        cfg = self.cfg
        shapes = {tuple(t.shape[-2:]) for t in inputs.values()}
        if len(shapes) != 1:
            raise ValueError(f"sensors are not on one grid: {shapes}")
        height, width = shapes.pop()
        available = list(inputs)
        p = plan_views(cfg, rng, height, width, available)

        def cut(box: Box, flip: bool, size: int, used: set[str]) -> dict[str, torch.Tensor]:
            keys = [s for s in available if s in used]
            return crop_views(inputs, box, size, flip, keys, cfg.resample)

        g_crops = [
            cut(b, f, cfg.global_size, {*t, *s})
            for b, f, t, s in zip(p.g_boxes, p.g_flips, p.teacher, p.student)
        ]
        return {
            "teacher": [_view(c, t) for c, t in zip(g_crops, p.teacher)],
            "student_global": [_view(c, s) for c, s in zip(g_crops, p.student)],
            "student_local": [
                _view(cut(b, f, cfg.local_size, set(s)), s)
                for b, f, s in zip(p.l_boxes, p.l_flips, p.local)
            ],
        }


@dataclass(frozen=True)
class ViewPlan:
    """The random choices of one sample's views: crop boxes, flips and sensor draws.

    Attributes:
        g_boxes, g_flips: global crop boxes (top, left, height, width) and flips.
        l_boxes, l_flips: local crop boxes and flips.
        teacher, student: sensors of each global view for the teacher and the student.
        local: sensors of each local view.
    """

    g_boxes: tuple[Box, ...]
    g_flips: tuple[bool, ...]
    l_boxes: tuple[Box, ...]
    l_flips: tuple[bool, ...]
    teacher: tuple[tuple[str, ...], ...]
    student: tuple[tuple[str, ...], ...]
    local: tuple[tuple[str, ...], ...]

    def used(self) -> set[str]:
        """Every sensor some view of the sample uses."""
        return {s for group in (self.teacher, self.student, self.local) for d in group for s in d}

    def bounds(self) -> Box:
        """The smallest box holding every crop box (what has to be read from the tile)."""
        boxes = (*self.g_boxes, *self.l_boxes)
        top, left = min(b[0] for b in boxes), min(b[1] for b in boxes)
        bottom, right = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        return top, left, bottom - top, right - left


def plan_views(
    cfg: MultiCropConfig,
    rng: np.random.Generator,
    height: int,
    width: int,
    available: Sequence[str],
) -> ViewPlan:
    """Draw one sample's crop boxes, flips and sensors from ``rng`` (the order is fixed: global
    boxes and flips, local ones, then the teacher's, the student's and the local sensor draws),
    so the per-sample and the batched multi-crop give the same views for the same generator."""

    def plan(scale: tuple[float, float]) -> tuple[Box, bool]:
        box = random_resized_box(rng, height, width, scale, cfg.ratio)
        return box, bool(rng.random() < cfg.flip_p)

    def draw() -> tuple[str, ...]:
        return draw_sensors(rng, available, cfg.sensor_draw, cfg.keep_p)

    g = [plan(cfg.global_scale) for _ in range(cfg.n_global)]
    loc = [plan(cfg.local_scale) for _ in range(cfg.n_local)]
    teacher = tuple(draw() for _ in g)
    student = tuple(draw() for _ in g)
    local = tuple(draw() for _ in loc)
    return ViewPlan(
        tuple(b for b, _ in g),
        tuple(f for _, f in g),
        tuple(b for b, _ in loc),
        tuple(f for _, f in loc),
        teacher,
        student,
        local,
    )


def _view(crop: Mapping[str, torch.Tensor], sensors: tuple[str, ...]) -> dict[str, object]:
    return {"inputs": {s: crop[s] for s in sensors}, "sensors": sensors}


def _collate_view(
    views: Sequence[Mapping[str, Any]], sensors: Sequence[str], channels: Mapping[str, int]
) -> dict[str, dict[str, torch.Tensor]]:
    size = next(iter(views[0]["inputs"].values())).shape[-1]
    inputs, masks = {}, {}
    for s in sensors:
        chosen = [s in v["sensors"] for v in views]
        zeros = torch.zeros(channels[s], size, size)
        inputs[s] = torch.stack(
            [v["inputs"][s] if c else zeros for v, c in zip(views, chosen)]
        )  # (B, C, S, S)
        masks[s] = torch.tensor(chosen, dtype=torch.bool)  # (B,)
    return {"inputs": inputs, "masks": masks}


def collate_views(samples: Sequence[Mapping[str, Any]], sensors: Sequence[str]) -> dict[str, Any]:
    """Stack per-sample outputs of the pretraining dataset into the contract-B batch.

    Every sensor in ``sensors`` appears in each view's ``inputs`` ((B, C, S, S), zeros where a
    sample's view does not use it) and ``masks`` ((B,) bool). ``skipped`` lists the
    ``(reason, message)`` records of samples replaced while loading this batch.
    """
    channels = {s: get_sensor(s).num_bands for s in sensors}
    batch: dict[str, Any] = {}
    for key in ("teacher", "student_global", "student_local"):
        n = len(samples[0][key])
        batch[key] = [
            _collate_view([smp[key][i] for smp in samples], sensors, channels) for i in range(n)
        ]
    batch["landcover"] = torch.tensor([int(s["landcover"]) for s in samples], dtype=torch.long)
    batch["index"] = torch.tensor([int(s["index"]) for s in samples], dtype=torch.long)
    batch["skipped"] = [r for s in samples for r in s.get("skipped", [])]
    return batch
