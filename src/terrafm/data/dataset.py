"""Pretraining datasets: curated tiles -> normalised sensors -> multi-crop views (docs/design.md, "Objective", "Pretraining data").

:class:`TileDataset` reads one curated tile from its source and applies the quality rules
(:func:`terrafm.data.tiles.finish_tile`). :class:`MultiCropDataset` turns it into views; a bad
tile is skipped with its reason and replaced by a deterministic substitute, so a run never stops
on one corrupt file (or stops at once, naming it, with ``fail_fast``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from terrafm.data.curation import TileRef, TileTable
from terrafm.data.multicrop import MultiCrop
from terrafm.data.sampling import SampleKey
from terrafm.data.skips import SampleError, TooManyBadSamples
from terrafm.data.tiles import TileSource, finish_tile
from terrafm.sensors import get_sensor

__all__ = ["KeyedDataset", "MultiCropDataset", "TileDataset", "load_with_substitutes"]


T = TypeVar("T")


def load_with_substitutes(
    load: Callable[[int], T],
    key: tuple[int, int, int],
    n: int,
    seed: int,
    max_retries: int,
    fail_fast: bool,
    on_error: Callable[[int, SampleError], None] | None = None,
) -> tuple[int, T, list[tuple[str, str]]]:
    """``load(index)``, replacing an unusable tile by a seeded random substitute until one loads.

    The substitute of attempt ``a`` for sampler key ``(index, epoch, pos)`` is drawn from
    ``default_rng([seed, epoch, pos, a + 1, 0xBAD])``, so every reader of the same tiles (parquet
    or shards) substitutes the same way, and a resumed run the same as an uninterrupted one.

    Returns:
        ``(index actually loaded, what load returned, (reason, message) of each skip)``.

    Raises:
        SampleError: the first one, with ``fail_fast``.
        TooManyBadSamples: more than ``max_retries`` consecutive substitutes were unusable.
    """
    index, epoch, pos = key
    skipped: list[tuple[str, str]] = []
    errors: list[SampleError] = []
    for attempt in range(max_retries + 1):
        try:
            return index, load(index), skipped
        except SampleError as e:
            if fail_fast:
                raise
            if on_error is not None:
                on_error(index, e)
            errors.append(e)
            skipped.append((e.reason, str(e)))
            sub = np.random.default_rng([seed, epoch, pos, attempt + 1, 0xBAD])
            index = int(sub.integers(n))
    raise TooManyBadSamples(
        f"{max_retries + 1} consecutive unusable tiles; last errors: "
        + "; ".join(str(e) for e in errors[-3:])
    )


log = logging.getLogger("terrafm.data")


class TileDataset(Dataset[dict[str, object]]):
    """Curated tiles of one or more sources, as normalised per-sensor tensors.

    Args:
        sources: the tile sources.
        refs: the curated tiles (:func:`terrafm.data.curation.curate`).
        sensors: sensors to read (in this order in every output).
        max_invalid: largest share of no-data / cloud / non-finite pixels a sensor tile may have.
        require_all: a tile must have every sensor; otherwise a failing sensor is dropped (its
            reason recorded) as long as one remains.
    """

    def __init__(
        self,
        sources: Sequence[TileSource],
        refs: Sequence[TileRef],
        sensors: Sequence[str],
        *,
        max_invalid: float = 0.5,
        require_all: bool = True,
    ) -> None:
        if not refs:
            raise ValueError(
                "no tiles to read: every cell was curated out or the sources are empty"
            )
        for s in sensors:
            get_sensor(s)
        self.sources = list(sources)
        self.refs = refs
        self.sensors = tuple(sensors)
        self.max_invalid = max_invalid
        self.require_all = require_all

    def __len__(self) -> int:
        return len(self.refs)

    def strata(self) -> np.ndarray | list[tuple[int, str, str]]:
        """One stratum (id or tuple) per tile, for the sampler."""
        if isinstance(self.refs, TileTable):
            return self.refs.stratum_ids
        return [r.stratum for r in self.refs]

    def load(self, index: int) -> tuple[dict[str, torch.Tensor], list[SampleError]]:
        """Sensor -> (C, T, T) normalised tensor of tile ``index``, and dropped-sensor errors.

        Raises:
            SampleError: the tile cannot be used (naming the file, row group and tile).
        """
        ref = self.refs[index]
        src = self.sources[ref.source]
        wanted = [s for s in self.sensors if s in ref.sensors]
        tiles, errors = src.read_tile(ref.cell, ref.tile, wanted)
        out: dict[str, torch.Tensor] = {}
        for s, t in tiles.items():
            try:
                out[s] = finish_tile(s, t, f"{src.name} tile {ref.name}", self.max_invalid)
            except SampleError as e:
                errors.append(e)
        if errors and (self.require_all or not out):
            raise errors[0]
        if not out:
            raise SampleError("missing_sensor", f"{src.name} tile {ref.name}", "no sensor readable")
        shapes = {tuple(t.shape[-2:]) for t in out.values()}
        if len(shapes) > 1:
            raise SampleError(
                "mismatch", f"{src.name} tile {ref.name}", f"sensor grids differ: {shapes}"
            )
        return {s: out[s] for s in self.sensors if s in out}, errors

    def __getitem__(self, index: int) -> dict[str, object]:
        inputs, _ = self.load(index)
        return {"inputs": inputs, "landcover": self.refs[index].landcover, "index": index}


class KeyedDataset(Dataset[dict[str, object]]):
    """What both pretraining datasets share (this one's :class:`MultiCropDataset` and
    :class:`terrafm.data.shards.ShardViewDataset`): items keyed by the sampler's ``(index, epoch,
    position)``, a bad tile replaced by the ``k``-th substitute drawn from ``(seed, epoch,
    position, k)`` (:func:`load_with_substitutes`), and the views drawn from a generator seeded
    by ``(seed, epoch, position, index)``, so skipping and views are deterministic.

    Args:
        tiles: the tile table (``sensors``, ``refs``, ``__len__``).
        seed: base seed of the augmentations.
        fail_fast: raise the first :class:`SampleError` instead of skipping.
        max_retries: consecutive bad substitutes tolerated before giving up with an error.
    """

    def __init__(
        self, tiles: Any, *, seed: int = 0, fail_fast: bool = False, max_retries: int = 16
    ) -> None:
        self.tiles = tiles
        self.seed = seed
        self.fail_fast = fail_fast
        self.max_retries = max_retries

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self.tiles.sensors)

    def __len__(self) -> int:
        return len(self.tiles)

    def _resolve(
        self,
        key: SampleKey | int,
        load: Callable[[int], tuple[Any, ...]],
        on_error: Callable[[int, SampleError], None] | None = None,
    ) -> tuple[int, tuple[Any, ...], list[tuple[str, str]], np.random.Generator]:
        """(index loaded, what ``load`` returned, skip records, the views' generator) of a key;
        ``load`` returns ``(..., dropped-sensor errors)`` last, which become skip records."""
        index, epoch, pos = key if isinstance(key, tuple) else (int(key), 0, int(key))
        index, loaded, skipped = load_with_substitutes(
            load, key=(index, epoch, pos), n=len(self.tiles), seed=self.seed,
            max_retries=self.max_retries, fail_fast=self.fail_fast, on_error=on_error,
        )  # fmt: skip
        skipped += [(f"dropped_sensor_{e.reason}", str(e)) for e in loaded[-1]]
        rng = np.random.default_rng([self.seed, epoch, pos, index])
        return index, loaded, skipped, rng


class MultiCropDataset(KeyedDataset):
    """Views of curated tiles, keyed by the sampler's ``(index, epoch, position)`` (see
    :class:`KeyedDataset`).

    Args:
        tiles: the tile dataset.
        transform: the multi-crop transform.
        seed, fail_fast, max_retries: see :class:`KeyedDataset`.
    """

    def __init__(
        self,
        tiles: TileDataset,
        transform: MultiCrop,
        *,
        seed: int = 0,
        fail_fast: bool = False,
        max_retries: int = 16,
    ) -> None:
        super().__init__(tiles, seed=seed, fail_fast=fail_fast, max_retries=max_retries)
        self.transform = transform
        self._bad: dict[int, SampleError] = {}  # per process: tiles already known to be bad

    def __getitem__(self, key: SampleKey | int) -> dict[str, object]:
        index, (inputs, _), skipped, rng = self._resolve(key, self._load)
        sample: dict[str, object] = dict(self.transform(inputs, rng))
        sample["landcover"] = self.tiles.refs[index].landcover
        sample["index"] = index
        sample["skipped"] = skipped
        return sample

    def _load(self, index: int) -> tuple[dict[str, torch.Tensor], list[SampleError]]:
        known = self._bad.get(index)
        if known is not None:
            # A fresh exception each time: re-raising the stored one would chain every raising
            # frame (and its locals: whole decoded tiles and views) onto its traceback, forever.
            raise SampleError(known.reason, known.where, known.detail)
        try:
            return self.tiles.load(index)
        except SampleError as e:
            log.warning("skipped sample: %s", e)
            # Remember only the message: the traceback's frames hold the decoded rasters.
            self._bad[index] = SampleError(e.reason, e.where, e.detail)
            raise
