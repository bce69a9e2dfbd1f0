"""From ``cfg.data`` to a stream of contract-B batches: the Major-TOM loader as a BatchSource.

Builds :func:`terrafm.data.loader.build_pretrain_loader` with the config's crops, curation and
sampling, and maps the component switches of SPEC §4 to the sensor draw (see
:class:`terrafm.config.DataConfig`). "Fusion off" needs exactly one sensor per view: the loader
delivers every sensor and :func:`one_sensor_per_view` keeps one per sample, drawn from a generator
seeded by ``(seed, rank, epoch, batch)`` so a resumed run draws the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from terrafm.config import PretrainConfig
from terrafm.ssl.distributed import DistInfo

__all__ = ["LoaderSource", "build_source", "one_sensor_per_view", "sensor_plan"]

log = logging.getLogger(__name__)


def sensor_plan(cfg: PretrainConfig) -> tuple[list[str], str, bool]:
    """``(sensors to load, loader sensor draw, keep one sensor per view)`` for the switches."""
    d = cfg.data
    if d.modality_aug and d.fusion:
        return list(d.sensors), d.modality_mode, False
    if d.modality_aug:  # sensors as augmentation, never fused
        return list(d.sensors), "all", True
    if d.fusion:  # every view fuses every sensor
        return list(d.sensors), "all", False
    return [d.single_sensor], "all", False


def one_sensor_per_view(batch: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
    """Keep one of each sample's available sensors in every view (uniformly), zero the rest."""
    for key in ("teacher", "student_global", "student_local"):
        for view in batch[key]:
            keys = list(view["inputs"])
            avail = torch.stack([view["masks"][k] for k in keys], 1).float()  # (B, m)
            pick = torch.multinomial(avail, 1, generator=g).squeeze(1)  # (B,)
            for j, k in enumerate(keys):
                keep = pick == j
                view["masks"][k] = keep
                view["inputs"][k] = view["inputs"][k] * keep[:, None, None, None]
    return batch


class LoaderSource:
    """A :class:`terrafm.data.loader.PretrainLoader` seen as a ``BatchSource``.

    Args:
        loader: the pretraining loader of this rank.
        single_view_sensor: apply :func:`one_sensor_per_view` (fusion off).
        seed: seed of that draw.
        rank: this process's rank.
    """

    def __init__(self, loader: Any, single_view_sensor: bool, seed: int, rank: int):
        self.loader = loader
        self.single = single_view_sensor
        self.seed, self.rank = seed, rank
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
        for i, batch in enumerate(loader, start=start):
            if self.single:
                g = torch.Generator().manual_seed(
                    ((self.seed * 1009 + self.rank) * 100_003 + epoch) * 1_000_003 + i
                )
                batch = one_sensor_per_view(batch, g)
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
    """The Major-TOM / GeoTIFF-folder loader of ``cfg.data`` for this rank."""
    from terrafm.data.loader import CurationConfig, QualityConfig, build_pretrain_loader
    from terrafm.data.multicrop import MultiCropConfig

    d = cfg.data
    if d.root is None:
        raise ValueError(
            "data.root is not set: pass data.root=DIR (a Major-TOM root or GeoTIFF folder)"
        )
    roots = [d.root] if isinstance(d.root, str) else list(d.root)
    sensors, draw, single = sensor_plan(cfg)
    views = MultiCropConfig(
        global_size=d.global_size,
        local_size=d.local_size,
        n_local=d.n_local,
        global_scale=tuple(d.global_scale),  # type: ignore[arg-type]
        local_scale=tuple(d.local_scale),  # type: ignore[arg-type]
        flip_p=d.flip_p,
        sensor_draw=draw,
        keep_p=d.keep_prob,
    )
    loader = build_pretrain_loader(
        roots,
        sensors,
        d.batch_size,
        views=views,
        curation=CurationConfig(
            ocean_keep=d.ocean_keep,
            max_cloud_cover=d.max_cloud_cover,
            tiles_per_side=d.tiles_per_side,
        ),
        quality=QualityConfig(max_invalid=d.max_invalid, fail_fast=d.fail_fast),
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
    return LoaderSource(loader, single, cfg.train.seed, info.rank)
