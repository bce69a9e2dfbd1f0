"""Labelled downstream tasks cut from held-out synthetic cells, in the "folder" layout (contract C).

Held-out cells are drawn like the pretraining world but never written into its products. Each is
drawn with a target dominant class (so every WorldCover class has cells, rare ones included), in a
climate where that class occurs, cloud-free and without no-data, and cut into chips:

- ``landcover_cls``: scene classification, ``cls_chip`` px chips whose dominant class covers at
  least ``min_purity`` of the chip; label = dominant class.
- ``landcover_seg``: semantic segmentation, ``seg_chip`` px chips with per-pixel class masks.

Splits are by cell (all chips of a cell share a split), stratified by the cell's target class.
Every chip carries its own illumination gain and atmosphere, and S1 its own calibration offset, as
chips of a real benchmark come from many acquisitions; so a chip's band means say less about its
class than its texture, arrangement and radar response do.

Each task folder is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terrafm.data.landcover import WORLDCOVER_CLASSES
from terrafm.io.resample import resample_to
from terrafm.io.taskfolder import TaskFolderWriter
from terrafm.world.atmosphere import L1C_BANDS, S2_BANDS, draw_atmosphere
from terrafm.world.cells import (
    CellPlan,
    RenderCache,
    render_s1,
    render_s2,
    render_surface,
)
from terrafm.world.landcover import CLASS_NAMES, CLIMATE_COMPOSITION

__all__ = [
    "IGNORE_INDEX",
    "TASK_SENSORS",
    "ChipPlan",
    "HeldOutCell",
    "TaskSummary",
    "chip_rasters",
    "climates_for",
    "plan_chips",
    "render_heldout",
    "split_cells",
    "write_tasks",
]

IGNORE_INDEX = 255
TASK_SENSORS: dict[str, dict[str, object]] = {
    "s2_l2a": {"bands": list(S2_BANDS), "unit": "DN"},
    "s2_l1c": {"bands": list(L1C_BANDS), "unit": "DN"},
    "s1": {"bands": ["VV", "VH"], "unit": "dB"},
}


def climates_for(code: int, min_share: float = 0.02) -> tuple[str, ...]:
    """Köppen zones where class ``code`` has at least ``min_share`` in the prior composition."""
    k = WORLDCOVER_CLASSES.index(code)
    zones = tuple(z for z, comp in CLIMATE_COMPOSITION.items() if comp[k] >= min_share)
    return zones or tuple(z for z, comp in CLIMATE_COMPOSITION.items() if comp[k] > 0)


@dataclass
class HeldOutCell:
    """A rendered held-out cell on its 10 m grid.

    Attributes:
        plan: the cell plan.
        split: ``train``, ``val`` or ``test``.
        codes: uint8 (S, S) WorldCover codes.
        s2_l2a: (12, S, S) float32 DN, S2_BANDS order (20/60 m bands upsampled bilinearly).
        s2_l1c: (13, S, S) float32 DN, L1C_BANDS order.
        s1: (2, S, S) float32 linear power (VV, VH).
    """

    plan: CellPlan
    split: str
    codes: np.ndarray
    s2_l2a: np.ndarray
    s2_l1c: np.ndarray
    s1: np.ndarray


def _stack_10m(bands: dict[str, np.ndarray], names: Sequence[str], size: int) -> np.ndarray:
    return np.stack([resample_to(bands[b].astype(np.float32), (size, size)) for b in names])


def render_heldout(plan: CellPlan, split: str, cache: RenderCache | None = None) -> HeldOutCell:
    """Render a held-out cell's three sensors, co-registered on the 10 m grid."""
    scene = (cache or RenderCache(0)).scene(plan)
    surface = render_surface(plan, scene)
    l2a, _, _ = render_s2(plan, scene, surface, "L2A")
    l1c, _, _ = render_s2(plan, scene, surface, "L1C")
    s1, _ = render_s1(plan, scene)
    s = plan.size
    return HeldOutCell(
        plan=plan,
        split=split,
        codes=scene.codes,
        s2_l2a=_stack_10m(l2a, S2_BANDS, s),
        s2_l1c=_stack_10m(l1c, L1C_BANDS, s),
        s1=np.stack([s1["vv"], s1["vh"]]),
    )


def split_cells(
    targets: Sequence[int], fractions: tuple[float, float, float], seed: int
) -> list[str]:
    """A split per cell, stratified by target class (at least one test cell per class if >= 2).

    Args:
        targets: target class of each held-out cell.
        fractions: (train, val, test) shares.
        seed: shuffling seed.
    """
    rng = np.random.default_rng([seed, 7])
    out = [""] * len(targets)
    for code in sorted(set(targets)):
        idx = [i for i, t in enumerate(targets) if t == code]
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1 if n >= 2 else 0, round(fractions[2] * n))
        n_val = max(1 if n >= 3 else 0, round(fractions[1] * n))
        for j, i in enumerate(idx):
            out[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out


@dataclass
class TaskSummary:
    """What was written for one task.

    Attributes:
        name: task folder name.
        path: task folder.
        task: ``classification`` or ``segmentation``.
        classes: class names in label / mask-index order.
        worldcover_codes: the ESA code of each class.
        samples: split -> number of samples.
        per_class: class -> number of chips (classification) or of pixels (segmentation).
    """

    name: str
    path: str
    task: str
    classes: list[str]
    worldcover_codes: list[int]
    samples: dict[str, int] = field(default_factory=dict)
    per_class: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _windows(size: int, chip: int) -> Iterator[tuple[int, int]]:
    for y in range(0, size - chip + 1, chip):
        for x in range(0, size - chip + 1, chip):
            yield y, x


def _chip_transform(plan: CellPlan, y: int, x: int) -> tuple[float, ...]:
    a, b, c, d, e, f = plan.geo.transform
    return (a, b, c + a * x, d, e, f + e * y)


def chip_rasters(
    cell: HeldOutCell, rng: np.random.Generator, y: int, x: int, chip: int
) -> dict[str, np.ndarray]:
    """The rasters of one chip as written: each chip gets its own illumination gain (L2A and L1C),
    atmosphere (L1C path radiance and transmittance) and S1 calibration offset.

    Returns:
        sensor -> (C, chip, chip): ``s2_l2a`` uint16 DN (12 bands), ``s2_l1c`` uint16 DN (13
        bands, B10 included), ``s1`` float32 dB (VV, VH).
    """
    win = (slice(None), slice(y, y + chip), slice(x, x + chip))
    gain = float(rng.lognormal(0.0, 0.12))
    l2a = cell.s2_l2a[win] * gain
    cell_atm = cell.plan.conditions.atmosphere
    chip_atm = draw_atmosphere(rng, cell_atm.sun_zenith + rng.normal(0, 8), rng.uniform(0.1, 1.0))
    p_cell = cell_atm.path()[:, None, None]
    p_chip = chip_atm.path()[:, None, None]
    t_ratio = (chip_atm.transmittance() / cell_atm.transmittance())[:, None, None]
    l1c = cell.s2_l1c[win].copy()
    idx = [L1C_BANDS.index(b) for b in S2_BANDS]
    l1c[idx] = p_chip + (l1c[idx] - p_cell) * gain * t_ratio
    s1_db = 10.0 * np.log10(np.maximum(cell.s1[win], 1e-6)) + rng.normal(0.0, 0.8)
    return {
        "s2_l2a": np.clip(np.rint(l2a), 1, 65535).astype(np.uint16),
        "s2_l1c": np.clip(np.rint(l1c), 1, 65535).astype(np.uint16),
        "s1": s1_db.astype(np.float32),
    }


class _TaskWriter:
    """One task folder being written under ``.<name>.partial``, renamed into place by ``commit``."""

    def __init__(self, final: Path, kind: str, codes: list[int], description: str) -> None:
        self.final, self.kind = final, kind
        self.tmp = final.parent / f".{final.name}.partial"
        names = [CLASS_NAMES[c] for c in codes]
        self.summary = TaskSummary(final.name, str(final), kind, names, codes)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.out = TaskFolderWriter(
            self.tmp,
            final.name,
            kind,
            names,
            TASK_SENSORS,
            IGNORE_INDEX,
            nodata={s: None if s == "s1" else 0.0 for s in TASK_SENSORS},
            extra={"worldcover_codes": codes, "description": description},
            atomic=False,  # the whole folder is renamed into place when complete
        )

    def add(
        self,
        cell: HeldOutCell,
        y: int,
        x: int,
        rasters: dict[str, np.ndarray],
        label: int | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Write one chip: its sensor rasters, its mask (segmentation) and its row."""
        sid = f"{cell.plan.geo.grid_cell}_y{y:04d}_x{x:04d}"
        crs, tr = cell.plan.geo.crs, _chip_transform(cell.plan, y, x)
        self.out.add(sid, cell.split, rasters, label, mask, crs, tr)
        per_class = self.summary.per_class
        if mask is not None:
            counts = np.bincount(mask.ravel(), minlength=256)
            for i, name in enumerate(self.summary.classes):
                per_class[name] = per_class.get(name, 0) + int(counts[i])
        if label is not None:
            name = self.summary.classes[label]
            per_class[name] = per_class.get(name, 0) + 1
        samples = self.summary.samples
        samples[cell.split] = samples.get(cell.split, 0) + 1

    def commit(self) -> TaskSummary:
        """Write ``task.json`` and ``samples.csv`` and move the folder into place."""
        self.out.finish()
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)
        return self.summary


@dataclass
class ChipPlan:
    """Which chips each held-out cell contributes, decided from the land-cover maps alone.

    Attributes:
        cls: per cell, (y, x, ESA code) of each classification chip kept.
        cls_codes: ESA codes of the classification classes, in label order.
        seg: per cell, (y, x) of each segmentation chip.
        seg_codes: ESA codes of the segmentation classes, in mask-index order.
    """

    cls: list[list[tuple[int, int, int]]]
    cls_codes: list[int]
    seg: list[list[tuple[int, int]]]
    seg_codes: list[int]


def plan_chips(
    maps: Sequence[np.ndarray],
    cls_chip: int,
    seg_chip: int,
    min_purity: float,
    seed: int = 0,
    seg_per_cell: int = 0,
    min_chips: int = 4,
    balance: float = 1.5,
    min_share: float = 0.002,
) -> ChipPlan:
    """Choose chips and class lists from the held-out cells' WorldCover maps.

    A classification chip is kept when its dominant class covers at least ``min_purity`` of it;
    a class needs ``min_chips`` such chips to be in the task, and keeps at most ``balance`` times
    the median class count (a random subset), so common classes do not swamp the task. Each
    cell gives ``seg_per_cell`` random segmentation chips (0: every window). A segmentation class
    needs ``min_share`` of all segmentation pixels; rarer classes are set to the ignore index.
    """
    cls: list[list[tuple[int, int, int]]] = []
    for codes in maps:
        kept = []
        for y, x in _windows(codes.shape[0], cls_chip):
            vals, counts = np.unique(codes[y : y + cls_chip, x : x + cls_chip], return_counts=True)
            k = int(np.argmax(counts))
            if counts[k] >= min_purity * cls_chip * cls_chip:
                kept.append((y, x, int(vals[k])))
        cls.append(kept)
    n_per = {c: sum(1 for kept in cls for ch in kept if ch[2] == c) for c in WORLDCOVER_CLASSES}
    cls_codes = [c for c in WORLDCOVER_CLASSES if n_per[c] >= min_chips]
    cap = int(np.ceil(balance * np.median([n_per[c] for c in cls_codes]))) if cls_codes else 0
    rng = np.random.default_rng([seed, 17])
    keep: set[tuple[int, int, int, int]] = set()
    for c in cls_codes:
        mine = [(i, *ch) for i, kept in enumerate(cls) for ch in kept if ch[2] == c]
        order = rng.permutation(len(mine))[:cap]
        keep.update(mine[j] for j in sorted(order))
    cls = [[ch for ch in kept if (i, *ch) in keep] for i, kept in enumerate(cls)]
    seg: list[list[tuple[int, int]]] = []
    counts = np.zeros(256, dtype=np.int64)
    for codes in maps:
        wins = list(_windows(codes.shape[0], seg_chip))
        if 0 < seg_per_cell < len(wins):
            wins = [wins[j] for j in sorted(rng.permutation(len(wins))[:seg_per_cell])]
        seg.append(wins)
        for y, x in wins:
            counts += np.bincount(codes[y : y + seg_chip, x : x + seg_chip].ravel(), minlength=256)
    total = max(int(counts.sum()), 1)
    seg_codes = [c for c in WORLDCOVER_CLASSES if counts[c] / total >= min_share]
    return ChipPlan(cls, cls_codes, seg, seg_codes)


def write_tasks(
    root: Path,
    plans: Sequence[CellPlan],
    splits: Sequence[str],
    *,
    cls_chip: int,
    seg_chip: int,
    min_purity: float,
    seed: int,
    seg_per_cell: int = 0,
    cache_bytes: int = 256 * 2**20,
) -> list[TaskSummary]:
    """Render the held-out cells one at a time and write both task folders under ``root``.

    Args:
        root: parent folder (``root/landcover_cls``, ``root/landcover_seg``).
        plans: held-out cell plans.
        splits: split of each cell.
        cls_chip: classification chip side (px).
        seg_chip: segmentation chip side (px).
        min_purity: minimum dominant-class share of a classification chip.
        seed: world seed (per-chip perturbations).
        seg_per_cell: segmentation chips per cell (0: every window).
        cache_bytes: memory for land-cover scenes kept between the two passes (speed only).
    """
    cache = RenderCache(cache_bytes)
    maps = [cache.scene(p).codes for p in plans]
    chips = plan_chips(maps, cls_chip, seg_chip, min_purity, seed, seg_per_cell)
    cls = _TaskWriter(
        root / "landcover_cls",
        "classification",
        chips.cls_codes,
        f"Scene classification of {cls_chip} px chips from held-out cells of the terrafm "
        f"synthetic world: label = dominant ESA WorldCover class (>= {min_purity:.0%} of the chip).",
    )
    seg = _TaskWriter(
        root / "landcover_seg",
        "segmentation",
        chips.seg_codes,
        f"Semantic segmentation of {seg_chip} px chips from held-out cells of the terrafm "
        f"synthetic world into ESA WorldCover classes; masks hold class indices, "
        f"{IGNORE_INDEX} = ignore (classes too rare to evaluate).",
    )
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # ESA code -> mask index
    lut[chips.seg_codes] = np.arange(len(chips.seg_codes), dtype=np.uint8)
    for plan, split, kept, seg_wins in zip(plans, splits, chips.cls, chips.seg):
        cell = render_heldout(plan, split, cache)
        for y, x, code in kept:
            rng = np.random.default_rng([seed, 11, plan.index, y, x])
            label = chips.cls_codes.index(code)
            cls.add(cell, y, x, chip_rasters(cell, rng, y, x, cls_chip), label=label)
        for y, x in seg_wins:
            rng = np.random.default_rng([seed, 13, plan.index, y, x])
            mask = lut[cell.codes[y : y + seg_chip, x : x + seg_chip]]
            seg.add(cell, y, x, chip_rasters(cell, rng, y, x, seg_chip), mask=mask)
    return [cls.commit(), seg.commit()]
