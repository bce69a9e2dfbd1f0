"""The one builder the pretraining code calls: roots -> contract-B batches (docs/design.md, "Objective", "Pretraining data").

``build_pretrain_loader(roots, sensors, batch_size, ...)`` opens the sources (Major-TOM roots or
GeoTIFF folders), pairs and curates cells, cuts tiles, and returns a :class:`PretrainLoader`: a
``DataLoader`` over multi-crop views with a :class:`~terrafm.data.sampling.StratifiedSampler`,
which counts skipped samples and saves/restores its exact position for mid-epoch resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch.utils.data import DataLoader

from terrafm.data.curation import curate
from terrafm.data.dataset import KeyedDataset, MultiCropDataset, TileDataset
from terrafm.data.folder import GeoTiffFolderSource, discover_scenes
from terrafm.data.majortom import SENSOR_PRODUCT
from terrafm.data.multicrop import MultiCrop, MultiCropConfig, collate_views
from terrafm.data.sampling import StratifiedSampler
from terrafm.data.skips import SkipLog
from terrafm.data.sources import MajorTomSource
from terrafm.data.tiles import TileSource

__all__ = [
    "CurationConfig",
    "PretrainLoader",
    "QualityConfig",
    "build_pretrain_dataset",
    "build_pretrain_loader",
    "open_sources",
]

log = logging.getLogger("terrafm.data")


@dataclass(frozen=True)
class CurationConfig:
    """Which cells and tiles enter pretraining (docs/design.md, "Pretraining data").

    Attributes:
        require_all: keep only cells with every requested sensor.
        ocean_keep: fraction of ocean cells kept.
        ocean_min_water: water share above which a water-dominated cell is ocean.
        max_cloud_cover: drop S2 rows above this metadata cloud cover (percent); None keeps all.
        max_nodata: drop rows above this metadata no-data fraction; None keeps all.
        tiles_per_side: Major-TOM cells are cut into ``tiles_per_side``² tiles.
        tile_size: tile side for GeoTIFF folders.
        s1_unit: unit of S1 rasters in GeoTIFF folders (``dB`` or ``linear``).
    """

    require_all: bool = True
    ocean_keep: float = 0.02
    ocean_min_water: float = 0.95
    max_cloud_cover: float | None = None
    max_nodata: float | None = None
    tiles_per_side: int = 2
    tile_size: int = 534
    s1_unit: str = "dB"


@dataclass(frozen=True)
class QualityConfig:
    """Pixel and sample quality rules.

    Attributes:
        max_invalid: largest share of no-data / cloud / non-finite pixels per sensor tile.
        mask_clouds: count ``cloud_mask`` pixels as invalid.
        harmonize: remove the +1000 DN offset of S2 baseline >= 04.00.
        fail_fast: raise on the first bad sample instead of skipping it.
        max_retries: consecutive bad substitutes tolerated per sample.
    """

    max_invalid: float = 0.5
    mask_clouds: bool = True
    harmonize: bool = True
    fail_fast: bool = False
    max_retries: int = 16


def _is_majortom(root: str, storage_options: dict[str, object]) -> bool:
    fs, path = fsspec.core.url_to_fs(root, **storage_options)
    return any(fs.exists(f"{path}/{p}/metadata.parquet") for p in SENSOR_PRODUCT.values())


def open_sources(
    roots: Sequence[str | Path | TileSource],
    sensors: Sequence[str],
    curation: CurationConfig | None = None,
    quality: QualityConfig | None = None,
    storage_options: dict[str, object] | None = None,
) -> list[TileSource]:
    """Open each root: a Major-TOM root (has ``<PRODUCT>/metadata.parquet``), a GeoTIFF folder
    (``<scene>/<sensor>/*.tif``), or an already built source (passed through)."""
    cur, qual, so = (
        curation or CurationConfig(),
        quality or QualityConfig(),
        dict(storage_options or {}),
    )
    out: list[TileSource] = []
    for root in roots:
        if not isinstance(root, str | Path):
            out.append(root)
        elif _is_majortom(str(root), so):
            out.append(
                MajorTomSource(
                    root,
                    sensors,
                    storage_options=so,
                    require_all=cur.require_all,
                    max_cloud_cover=cur.max_cloud_cover,
                    max_nodata=cur.max_nodata,
                    mask_clouds=qual.mask_clouds,
                    harmonize=qual.harmonize,
                    tiles_per_side=cur.tiles_per_side,
                )
            )
        else:
            scenes = discover_scenes(root, cur.s1_unit, sensors)
            out.append(
                GeoTiffFolderSource(
                    scenes,
                    sensors,
                    tile_size=cur.tile_size,
                    require_all=cur.require_all,
                    harmonize=qual.harmonize,
                    name=str(root),
                )
            )
    return out


def build_pretrain_dataset(
    roots: Sequence[str | Path | TileSource],
    sensors: Sequence[str],
    *,
    views: MultiCropConfig | None = None,
    curation: CurationConfig | None = None,
    quality: QualityConfig | None = None,
    seed: int = 0,
    storage_options: dict[str, object] | None = None,
) -> MultiCropDataset:
    """Sources -> curated tiles -> :class:`MultiCropDataset` (see :func:`build_pretrain_loader`)."""
    cur, qual = curation or CurationConfig(), quality or QualityConfig()
    sources = open_sources(roots, sensors, cur, qual, storage_options)
    refs, report = curate(
        [s.cells() for s in sources],
        ocean_keep=cur.ocean_keep,
        ocean_min_water=cur.ocean_min_water,
        seed=seed,
    )
    for s in sources:
        report.update(getattr(s, "report", {}))
    log.info("pretraining data: %s", dict(report))
    tiles = TileDataset(
        sources, refs, sensors, max_invalid=qual.max_invalid, require_all=cur.require_all
    )
    ds = MultiCropDataset(
        tiles,
        MultiCrop(views or MultiCropConfig()),
        seed=seed,
        fail_fast=qual.fail_fast,
        max_retries=qual.max_retries,
    )
    ds.report = report  # type: ignore[attr-defined]
    return ds


@dataclass
class PretrainLoader:
    """A DataLoader of contract-B batches that knows its exact position.

    Iterate it for batches; call :meth:`set_epoch` before each epoch. :meth:`state_dict` gives
    the position in samples actually delivered (not the DataLoader's prefetch position), so
    ``load_state_dict`` + iterating yields exactly the batches an uninterrupted run would have.
    Skipped samples (counted in the workers) are gathered into :attr:`skip_log`. ``augment``,
    when set, turns each delivered batch into views in this process (the shard loader's
    ``augment_device=cuda``).
    """

    dataset: KeyedDataset
    sampler: StratifiedSampler
    loader: DataLoader[dict[str, object]]
    batch_size: int
    skip_log: SkipLog = field(default_factory=SkipLog)
    augment: Callable[[dict[str, object]], dict[str, object]] | None = None
    _delivered: int = 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self) -> Iterator[dict[str, object]]:
        self._delivered = self.sampler._start
        for batch in self.loader:
            records = batch.pop("skipped")
            self.skip_log.extend(records)  # type: ignore[arg-type]
            if self.augment is not None:  # views cut in this process (on the accelerator)
                batch = self.augment(batch)
            self._delivered += self.batch_size
            yield batch

    def state_dict(self) -> dict[str, object]:
        return {
            "sampler": self.sampler.state_dict(position=self._delivered),
            "skips": self.skip_log.state_dict(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.sampler.load_state_dict(state["sampler"])  # type: ignore[arg-type]
        self._delivered = self.sampler._start
        if "skips" in state:
            self.skip_log.load_state_dict(state["skips"])  # type: ignore[arg-type]


def build_pretrain_loader(
    roots: Sequence[str | Path | TileSource],
    sensors: Sequence[str],
    batch_size: int,
    *,
    views: MultiCropConfig | None = None,
    curation: CurationConfig | None = None,
    quality: QualityConfig | None = None,
    samples_per_epoch: int | None = None,
    replacement: bool = True,
    balance: float = 1.0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    storage_options: dict[str, object] | None = None,
) -> PretrainLoader:
    """The pretraining data pipeline, from roots to contract-B batches.

    Args:
        roots: Major-TOM roots (``<root>/S2L2A/metadata.parquet`` ..., local or fsspec URLs),
            GeoTIFF folders (``<root>/<scene>/<sensor>/*.tif``) or built sources.
        sensors: sensor keys, e.g. ``("s1", "s2_l1c", "s2_l2a")``; every batch view carries all.
        batch_size: samples per batch on this rank (incomplete last batches are dropped).
        views: crop sizes, counts and sensor-draw rule (docs/design.md, "Objective" defaults).
        curation: cell selection (all sensors required, 2 % ocean kept).
        quality: pixel / sample quality rules and ``fail_fast``.
        samples_per_epoch: samples per epoch over all ranks (default: the number of tiles).
        replacement: sample with replacement (see :class:`StratifiedSampler`).
        balance: inverse-stratum-frequency exponent (1 = fully balanced, 0 = uniform).
        seed: seed of curation, sampling and augmentation.
        rank: this process's rank (``torch.distributed.get_rank()`` under torchrun).
        world_size: number of processes.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches for fast host-to-GPU copies.
        persistent_workers: keep workers alive across epochs (needs ``num_workers > 0``).
        storage_options: fsspec options for remote roots.
    """
    ds = build_pretrain_dataset(
        roots,
        sensors,
        views=views,
        curation=curation,
        quality=quality,
        seed=seed,
        storage_options=storage_options,
    )
    return make_loader(
        ds,
        batch_size,
        partial(collate_views, sensors=ds.sensors),
        samples_per_epoch=samples_per_epoch,
        replacement=replacement,
        balance=balance,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )


def make_loader(
    ds: Any,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any],
    *,
    samples_per_epoch: int | None,
    replacement: bool,
    balance: float,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    augment: Any = None,
    error: type[ValueError] = ValueError,
) -> PretrainLoader:
    """The stratified sampler, the ``DataLoader`` and the :class:`PretrainLoader` around a keyed
    dataset (the parquet path's or the shards'); arguments as :func:`build_pretrain_loader`,
    ``augment`` is run on each batch in this process (views cut on an accelerator), ``error`` is
    raised when a rank gets fewer samples than a batch."""
    sampler = StratifiedSampler(
        ds.tiles.strata(),
        samples_per_epoch,
        seed=seed,
        rank=rank,
        world_size=world_size,
        replacement=replacement,
        balance=balance,
    )
    if len(sampler) < batch_size:
        raise error(
            f"rank {rank} gets {len(sampler)} samples per epoch, fewer than batch_size {batch_size}"
        )
    loader: DataLoader[dict[str, object]] = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=persistent_workers and num_workers > 0,
        # Its own generator: a DataLoader iterator draws its base seed from the generator, and
        # from torch's global one without it, which would shift the trainer's dropout/drop-path
        # stream whenever an iterator starts (so a resumed run would diverge from a straight one).
        generator=torch.Generator().manual_seed(seed),
    )
    return PretrainLoader(ds, sampler, loader, batch_size, augment=augment)
