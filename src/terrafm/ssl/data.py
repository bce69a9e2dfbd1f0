"""From ``cfg.data`` to a stream of contract-B batches: the Major-TOM loader as a BatchSource.

Builds :func:`terrafm.data.loader.build_pretrain_loader` with the config's views, curation,
quality and sampling, and maps the component switches of docs/design.md, "Objective" to the loader's sensor draw (see
:class:`terrafm.config.DataConfig` and :func:`sensor_plan`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from terrafm.config import PretrainConfig
from terrafm.ssl.distributed import DistInfo

__all__ = ["LoaderSource", "TileCache", "build_source", "sensor_plan"]

log = logging.getLogger(__name__)


def sensor_plan(cfg: PretrainConfig) -> tuple[list[str], str]:
    """``(sensors to load, the loader's sensor draw)`` for the component switches."""
    d = cfg.data
    if d.modality_aug and d.fusion:
        return list(d.sensors), d.multicrop.sensor_draw
    if d.modality_aug:  # sensors as augmentation, never fused: one sensor per view
        return list(d.sensors), "one"
    if d.fusion:  # every view fuses every sensor
        return list(d.sensors), "all"
    return [d.single_sensor], "all"  # DINO on one sensor (the paper's baseline)


class TileCache:
    """Keeps decoded, normalised tiles in memory, up to a byte budget (small worlds, many epochs).

    Wraps a :class:`terrafm.data.dataset.TileDataset` and answers ``load(index)`` from memory
    after the first read; everything else is delegated. Decoding dominates the CPU cost of a
    small tile, so a run of many epochs over a small set (the built-in world) reads each tile
    once. Tiles past the budget are read from disk every time, as without the cache. With
    DataLoader workers each worker holds its own cache (use persistent workers).

    Args:
        tiles: the tile dataset.
        max_bytes: memory budget.
    """

    def __init__(self, tiles: Any, max_bytes: int):
        self.tiles = tiles
        self.max_bytes = max_bytes
        self.used = 0
        self._store: dict[int, tuple[dict[str, torch.Tensor], list[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "tiles":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.tiles, name)

    def __len__(self) -> int:
        return len(self.tiles)

    def load(self, index: int) -> tuple[dict[str, torch.Tensor], list[Any]]:
        hit = self._store.get(index)
        if hit is not None:
            return dict(hit[0]), list(hit[1])
        inputs, errors = self.tiles.load(index)
        size = sum(t.numel() * t.element_size() for t in inputs.values())
        if self.used + size <= self.max_bytes:
            self._store[index] = (dict(inputs), list(errors))
            self.used += size
        return inputs, errors


class LoaderSource:
    """A :class:`terrafm.data.loader.PretrainLoader` seen as a ``BatchSource``.

    Args:
        loader: the pretraining loader of this rank.
    """

    def __init__(self, loader: Any):
        self.loader = loader
        refs = loader.dataset.tiles.refs
        self._counts = dict(Counter(int(r.landcover) for r in refs))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def landcover_counts(self) -> Mapping[int, int]:
        return self._counts

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        loader = self.loader
        loader.set_epoch(epoch)
        if start:
            state = loader.sampler.state_dict(position=start * loader.batch_size)
            loader.sampler.load_state_dict({**state, "epoch": epoch})
        reported = loader.skip_log.total
        for batch in loader:
            if loader.skip_log.total != reported:
                reported = loader.skip_log.total
                log.warning("data: %s", loader.skip_log.summary())
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"skips": self.loader.skip_log.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "skips" in state:
            self.loader.skip_log.load_state_dict(state["skips"])


def build_source(cfg: PretrainConfig, info: DistInfo) -> LoaderSource:
    """The loader of ``cfg.data`` for this rank: the shard store ``data.shards`` when set (views
    cut batched on ``data.augment_device``), else the Major-TOM / GeoTIFF-folder ``data.root``."""
    from terrafm.data.loader import build_pretrain_loader

    d = cfg.data
    if d.root is None and d.shards is None:
        raise ValueError(
            "data.root is not set: pass data.root=DIR (a Major-TOM root or GeoTIFF folder) "
            "or data.shards=DIR (a store written by `terrafm prepare`)"
        )
    sensors, draw = sensor_plan(cfg)
    common: dict[str, Any] = dict(
        views=dataclasses.replace(d.multicrop, sensor_draw=draw),
        curation=d.curation,
        quality=d.quality,
        samples_per_epoch=d.samples_per_epoch,
        replacement=d.replacement,
        balance=d.balance,
        seed=cfg.train.seed,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=d.num_workers,
        pin_memory=d.pin_memory and info.device.type == "cuda",
        persistent_workers=d.num_workers > 0,
    )
    if d.shards is not None:
        from terrafm.data.shards import build_shard_loader

        augment: str = d.augment_device
        if augment == "auto":  # the training device, when it is an accelerator
            augment = str(info.device) if info.device.type == "cuda" else "cpu"
        return LoaderSource(
            build_shard_loader(d.shards, sensors, d.batch_size, augment_device=augment, **common)
        )
    assert d.root is not None
    roots = [d.root] if isinstance(d.root, str) else list(d.root)
    loader = build_pretrain_loader(roots, sensors, d.batch_size, **common)
    if d.cache_mb > 0:
        loader.dataset.tiles = TileCache(loader.dataset.tiles, d.cache_mb * 2**20)  # type: ignore[assignment]
    return LoaderSource(loader)
