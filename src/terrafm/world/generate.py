"""The built-in synthetic multi-sensor world, written in the Major-TOM layout (docs/design.md, "Pretraining data").

So that everything runs on a fresh machine with no downloads, :func:`make_world` generates a small
Earth: grid cells with Major-TOM names, UTM grids, climate zones and regions; spatially coherent
ESA WorldCover maps with a long-tailed class distribution; Sentinel-2 L2A surface reflectance with
class-specific spectra and textures, L1C through a varying atmosphere (with B10), Sentinel-1 VV/VH
with speckle; clouds, no-data edges, missing products and malformed CRS rows like the real data.
It writes, under ``out``::

    S2L2A/ S2L1C/ S1RTC/          Major-TOM products (contract A), read by terrafm.data.majortom
    landcover.parquet             dominant class, class histogram, climate zone, region per cell
    worldcover/<grid_cell>.tif    the 10 m WorldCover map of each cell
    tasks/landcover_cls/          scene classification from held-out cells (contract C)
    tasks/landcover_seg/          segmentation from held-out cells (contract C)
    world.json                    the manifest, written last: a world is complete when it exists

Everything is deterministic by seed. See ``docs/synthetic_world.md``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, overload

import numpy as np

from terrafm.data.landcover import (
    WORLDCOVER_CLASSES,
    LandCover,
    landcover_from_map,
    write_landcover,
)
from terrafm.data.majortom import MajorTomSample, write_product
from terrafm.errors import ConfigError
from terrafm.io.geotiff import encode_geotiff
from terrafm.outputs import atomic_write
from terrafm.world.cells import (
    CellPlan,
    RenderCache,
    plan_cell,
    render_s1,
    render_s2,
)
from terrafm.world.landcover import CLASS_NAMES
from terrafm.world.tasks import TaskSummary, climates_for, split_cells, write_tasks

__all__ = [
    "FORMAT",
    "PRESETS",
    "WorldConfig",
    "WorldError",
    "WorldPlan",
    "load_manifest",
    "make_world",
    "plan_world",
    "render_product",
    "task_problems",
    "world_config",
]

log = logging.getLogger(__name__)

FORMAT = "terrafm-synthetic-world/1"
MANIFEST = "world.json"
_PRODUCTS = ("S2L2A", "S2L1C", "S1RTC")
_OWN_ENTRIES = (*_PRODUCTS, "landcover.parquet", "worldcover", "tasks", MANIFEST)
PRETRAIN, HELDOUT = 0, 1


class WorldError(ConfigError):
    """A world that cannot be made as asked (bad configuration, or a folder in the way)."""


@dataclass(frozen=True)
class WorldConfig:
    """What :func:`make_world` generates.

    Attributes:
        cells: number of pretraining grid cells.
        cell_size: cell side in px at 10 m (multiple of 6, so 20 m and 60 m bands align; real
            Major-TOM cells are 1068 px).
        seed: world seed; the same config and seed give the same bytes.
        ocean_fraction: share of open-ocean cells (curation keeps only a few, docs/design.md, "Pretraining data").
        cloud_fraction: probability that a cell's S2 scene has clouds.
        nodata_fraction: probability of a no-data edge, per S2 and per S1 scene.
        s1_missing: probability that a cell has no S1RTC product.
        l1c_missing: probability that a cell has no S2L1C product.
        malformed_crs: probability of a metadata CRS like ``EPSG:EPSG:32633``.
        task_cells_per_class: held-out cells drawn per WorldCover class for the tasks.
        task_cell_size: side of held-out cells (0: same as ``cell_size``).
        cls_chip: classification chip side (multiple of 16).
        seg_chip: segmentation chip side (multiple of 16).
        seg_chips_per_cell: segmentation chips drawn per held-out cell (0: every window).
        min_purity: minimum share of the dominant class in a classification chip.
        split: (train, val, test) shares of held-out cells.
        rows_per_file: samples per Major-TOM image parquet file.
        worldcover_rasters: also write ``worldcover/<grid_cell>.tif``.
    """

    cells: int = 160
    cell_size: int = 192
    seed: int = 0
    ocean_fraction: float = 0.04
    cloud_fraction: float = 0.3
    nodata_fraction: float = 0.08
    s1_missing: float = 0.08
    l1c_missing: float = 0.02
    malformed_crs: float = 0.03
    task_cells_per_class: int = 8
    task_cell_size: int = 0
    cls_chip: int = 64
    seg_chip: int = 64
    seg_chips_per_cell: int = 0
    min_purity: float = 0.5
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    rows_per_file: int = 64
    worldcover_rasters: bool = True

    @property
    def heldout_size(self) -> int:
        return self.task_cell_size or self.cell_size

    def validate(self) -> None:
        """Raise :class:`WorldError` naming the first bad field."""
        if self.cells < 1:
            raise WorldError(f"cells must be >= 1, got {self.cells}")
        for name, size in (("cell_size", self.cell_size), ("task_cell_size", self.heldout_size)):
            if size < 48 or size % 6:
                raise WorldError(
                    f"{name} must be a multiple of 6 and >= 48 (20 m bands are size/2, 60 m bands "
                    f"size/6 px), got {size}"
                )
        for name in ("cls_chip", "seg_chip") if self.task_cells_per_class else ():
            chip = getattr(self, name)
            if chip < 16 or chip % 16 or chip > self.heldout_size:
                raise WorldError(
                    f"{name} must be a multiple of 16 (the encoder's patch size) and at most the "
                    f"held-out cell size {self.heldout_size}, got {chip}"
                )
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("fraction", "missing", "crs", "purity")) and not 0 <= v <= 1:
                raise WorldError(f"{f.name} must be in [0, 1], got {v}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise WorldError(
                f"split must be three non-negative shares summing to 1, got {self.split}"
            )
        if min(self.task_cells_per_class, self.seg_chips_per_cell) < 0 or self.rows_per_file < 1:
            raise WorldError(
                "task_cells_per_class and seg_chips_per_cell must be >= 0, rows_per_file >= 1"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        return d


PRESETS: dict[str, WorldConfig] = {
    # Whole quickstart (generate + pretrain + evaluate) in 15 minutes on 2 cores.
    "quickstart": WorldConfig(
        cells=128, cell_size=192, task_cells_per_class=10, seg_chip=64, seg_chips_per_cell=4
    ),
    # Bigger cells and more of them; still generates in about a minute on 2 cores.
    "default": WorldConfig(cells=256, cell_size=264, task_cells_per_class=8, seg_chip=128),
}


def world_config(preset: str = "quickstart", **overrides: Any) -> WorldConfig:
    """A preset's config with ``overrides`` (unknown keys are an error), validated."""
    if preset not in PRESETS:
        raise WorldError(f"unknown world preset {preset!r}; expected one of {list(PRESETS)}")
    known = {f.name for f in fields(WorldConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise WorldError(f"unknown world config key(s) {unknown}; known: {sorted(known)}")
    cfg = replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class WorldPlan:
    """Every cell of a world, planned: pretraining cells and held-out task cells."""

    config: WorldConfig
    pretrain: list[CellPlan]
    heldout: list[CellPlan]
    heldout_targets: list[int]
    heldout_splits: list[str]


def plan_world(config: WorldConfig) -> WorldPlan:
    """Plan every cell (cheap): locations, climates, compositions, dates, conditions."""
    config.validate()
    taken: set[tuple[int, int]] = set()
    rng = np.random.default_rng([config.seed, 99])
    ocean = rng.random(config.cells) < config.ocean_fraction
    missing = {"S1RTC": config.s1_missing, "S2L1C": config.l1c_missing}
    pretrain = [
        plan_cell(
            config.seed,
            PRETRAIN,
            i,
            config.cell_size,
            taken,
            ocean=bool(ocean[i]),
            cloud_p=config.cloud_fraction,
            nodata_p=config.nodata_fraction,
            missing_p=missing,
            malformed_crs_p=config.malformed_crs,
        )
        for i in range(config.cells)
    ]
    targets = [c for c in WORLDCOVER_CLASSES for _ in range(config.task_cells_per_class)]
    heldout = [
        plan_cell(
            config.seed,
            HELDOUT,
            j,
            config.heldout_size,
            taken,
            ocean=False,
            boost=code,
            snowy_winters=False,
            climates=climates_for(code),
        )
        for j, code in enumerate(targets)
    ]
    splits = split_cells(targets, config.split, config.seed)
    return WorldPlan(config, pretrain, heldout, targets, splits)


class _LazySamples(Sequence[MajorTomSample]):
    """The samples of one product, rendered when the writer asks for them (bounded memory)."""

    def __init__(self, plans: list[CellPlan], render: Callable[[CellPlan], MajorTomSample]) -> None:
        self.plans, self.render = plans, render

    def __len__(self) -> int:
        return len(self.plans)

    @overload
    def __getitem__(self, i: int) -> MajorTomSample: ...
    @overload
    def __getitem__(self, i: slice) -> list[MajorTomSample]: ...
    def __getitem__(self, i: int | slice) -> MajorTomSample | list[MajorTomSample]:
        if isinstance(i, slice):
            return [self.render(p) for p in self.plans[i]]
        return self.render(self.plans[i])


def _sample(
    plan: CellPlan, product: str, bands: dict[str, np.ndarray], **kw: Any
) -> MajorTomSample:
    s1 = product == "S1RTC"
    return MajorTomSample(
        grid_cell=plan.geo.grid_cell,
        product_id=plan.products[product],
        timestamp=plan.s1_time if s1 else plan.s2_time,
        bands=bands,
        crs=plan.crs,
        transform=plan.geo.transform,
        centre_lat=plan.geo.centre_lat,
        centre_lon=plan.geo.centre_lon,
        orbit_state=("ascending" if plan.conditions.ascending else "descending") if s1 else None,
        **kw,
    )


def render_product(
    plan: CellPlan, product: str, cache: RenderCache | None = None
) -> MajorTomSample:
    """One cell's sample of one product (``S2L2A``, ``S2L1C`` or ``S1RTC``)."""
    cache = cache or RenderCache(0)
    scene = cache.scene(plan)
    if product == "S1RTC":
        bands, nodata = render_s1(plan, scene)
        return _sample(plan, product, bands, nodata=nodata)
    level = "L2A" if product == "S2L2A" else "L1C"
    # L2A is written first; L1C, when the cell has it, is the last user of the surface.
    last = level == "L1C" or "S2L1C" not in plan.products
    surface = cache.surface(plan, scene, last_use=last)
    bands, cover, nodata = render_s2(plan, scene, surface, level)
    return _sample(plan, product, bands, cloud_cover=round(cover, 3), nodata=nodata)


def _render_with(plan: CellPlan, *, product: str, cache: RenderCache) -> MajorTomSample:
    return render_product(plan, product, cache)


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise WorldError(f"{out} exists and is not a folder")
    entries = [p.name for p in out.iterdir()]
    if entries and not overwrite:
        raise WorldError(
            f"{out} is not empty ({len(entries)} entries); choose a new folder or pass "
            f"overwrite=True (--overwrite) to replace the world in it"
        )
    foreign = sorted(set(entries) - set(_OWN_ENTRIES))
    if foreign:
        raise WorldError(
            f"{out} holds files that are not part of a world ({foreign[:5]}); not overwriting"
        )
    for name in entries:
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def load_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete world in ``out``, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WorldError(f"{path}: unreadable world manifest ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WorldError(f"{path}: not a terrafm synthetic world manifest")
    return data


def _is_intact(out: Path, manifest: dict[str, Any]) -> bool:
    """Every product, table and task folder the manifest lists is still there."""
    need = [out / p / "metadata.parquet" for p, n in manifest.get("products", {}).items() if n]
    need += [out / "landcover.parquet"]
    need += [out / "tasks" / t / "samples.csv" for t in manifest.get("tasks", {})]
    return all(p.is_file() for p in need)


def _write_landcover(
    out: Path, plans: Sequence[CellPlan], rasters: bool, cache: RenderCache
) -> list[LandCover]:
    records = []
    for plan in plans:
        codes = cache.scene(plan).codes
        records.append(
            landcover_from_map(plan.geo.grid_cell, codes, plan.geo.climate_zone, plan.geo.region)
        )
        if rasters:
            blob = encode_geotiff(codes, plan.geo.crs, plan.geo.transform, 0.0, ["worldcover"])
            with atomic_write(out / "worldcover" / f"{plan.geo.grid_cell}.tif") as tmp:
                tmp.write_bytes(blob)
    write_landcover(out, records)
    return records


def _class_stats(records: Sequence[LandCover]) -> dict[str, Any]:
    pixels = np.mean([r.hist for r in records], axis=0)
    dominant = {CLASS_NAMES[c]: sum(r.dominant == c for r in records) for c in WORLDCOVER_CLASSES}
    return {
        "pixel_fraction": {
            CLASS_NAMES[c]: round(float(v), 5) for c, v in zip(WORLDCOVER_CLASSES, pixels)
        },
        "dominant_cells": dominant,
    }


def task_problems(manifest: Mapping[str, Any], cfg: WorldConfig | None = None) -> list[str]:
    """One line per held-out task that an evaluation cannot use: no sample at all, or no
    ``train`` or ``test`` split (too few held-out cells passed the purity filter)."""
    hint = "raise --task-cells-per-class" + (
        f" (now {cfg.task_cells_per_class}) or --cell-size (now {cfg.cell_size})" if cfg else ""
    )
    out = []
    for name, task in manifest.get("tasks", {}).items():
        samples = {k: int(v) for k, v in task.get("samples", {}).items()}
        if not sum(samples.values()):
            out.append(f"tasks/{name} is empty: no held-out chip qualified; {hint}")
            continue
        lacking = [s for s in ("train", "test") if not samples.get(s)]
        if lacking:
            out.append(f"tasks/{name} has no {' or '.join(lacking)} samples; {hint}")
    return out


def make_world(
    out: str | Path,
    config: WorldConfig | None = None,
    *,
    overwrite: bool = False,
    cache_mb: int = 512,
) -> dict[str, Any]:
    """Generate the synthetic world into ``out`` and return its manifest.

    A complete world with the same config already in ``out`` is reused as is (its manifest is
    returned). Any other non-empty ``out`` (another config, or a world with parts missing) is an
    error unless ``overwrite`` (then only the world's own entries may be in it, and they are
    replaced).

    Args:
        out: destination folder.
        config: what to generate (default: the ``quickstart`` preset).
        overwrite: replace an existing world in ``out``.
        cache_mb: memory for rendered scenes and surfaces kept between products (speed only;
            the output does not depend on it).

    Raises:
        WorldError: bad config, or ``out`` in the way.
    """
    cfg = config or PRESETS["quickstart"]
    cfg.validate()
    out = Path(out)
    existing = load_manifest(out) if out.is_dir() else None
    same = existing is not None and existing.get("config") == cfg.to_dict()
    if same and not overwrite and existing is not None and _is_intact(out, existing):
        log.info("reusing the complete world in %s (same config)", out)
        return existing
    _check_out(out, overwrite)
    t0 = time.perf_counter()
    plan = plan_world(cfg)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    cache = RenderCache(cache_mb * 2**20)
    for product in _PRODUCTS:
        plans = [p for p in plan.pretrain if product in p.products]
        log.info("writing %s: %d cells of %d px", product, len(plans), cfg.cell_size)
        samples = _LazySamples(plans, partial(_render_with, product=product, cache=cache))
        write_product(out, product, samples, rows_per_file=cfg.rows_per_file)
        counts[product] = len(plans)
    records = _write_landcover(out, plan.pretrain, cfg.worldcover_rasters, cache)
    log.info("writing tasks from %d held-out cells", len(plan.heldout))
    tasks: list[TaskSummary] = []
    if plan.heldout:
        tasks = write_tasks(
            out / "tasks",
            plan.heldout,
            plan.heldout_splits,
            cls_chip=cfg.cls_chip,
            seg_chip=cfg.seg_chip,
            min_purity=cfg.min_purity,
            seed=cfg.seed,
            seg_per_cell=cfg.seg_chips_per_cell,
        )
    manifest = _manifest(cfg, plan, counts, records, tasks)
    for problem in task_problems(manifest, cfg):
        log.warning("%s", problem)
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("world written to %s in %.1f s", out, time.perf_counter() - t0)
    return manifest


def _manifest(
    cfg: WorldConfig,
    plan: WorldPlan,
    counts: dict[str, int],
    records: Sequence[LandCover],
    tasks: Sequence[TaskSummary],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "products": counts,
        "pretrain_cells": [p.geo.grid_cell for p in plan.pretrain],
        "heldout_cells": [p.geo.grid_cell for p in plan.heldout],
        "landcover": _class_stats(records),
        "tasks": {t.name: {k: v for k, v in t.to_dict().items() if k != "path"} for t in tasks},
    }
