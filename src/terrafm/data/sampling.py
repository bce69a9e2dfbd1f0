"""Land-cover-aware sampling across ranks, deterministic and resumable (docs/design.md, "Pretraining data").

Each tile is weighted by ``count(stratum) ** -balance`` (``balance=1``: inverse stratum frequency,
TerraFM's "sample evenly over strata" as a **choice**; 0: uniform). Every epoch draws one global
stream of ``num_samples`` tiles from a generator seeded by ``(seed, epoch)`` only, and rank ``r``
takes positions ``r, r + world_size, ...``: the ranks' shards partition the stream (disjoint
positions; with ``replacement=False`` also disjoint tiles). A resumed sampler restarts at the
saved position, so it yields exactly what the uninterrupted run would have.

Items are ``(index, epoch, position)``: the dataset derives each sample's augmentation RNG from
them, so the views do not depend on workers, prefetching or restarts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SampleKey", "StratifiedSampler", "stratum_weights"]

SampleKey = tuple[int, int, int]  # (dataset index, epoch, position in the epoch's global stream)


def stratum_weights(strata: Sequence[Hashable] | np.ndarray, balance: float = 1.0) -> np.ndarray:
    """Per-item weights ``count(stratum) ** -balance``, normalised to sum to 1.

    ``strata`` is one hashable per item, or an integer array of stratum ids (fast path).
    """
    if not len(strata):
        raise ValueError("cannot sample from an empty dataset")
    if isinstance(strata, np.ndarray):
        _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
        w = counts[inverse].astype(np.float64) ** -float(balance)
    else:
        n_of = Counter(strata)
        w = np.array([n_of[s] ** -float(balance) for s in strata], dtype=np.float64)
    return w / w.sum()


class StratifiedSampler(Sampler[SampleKey]):
    """Stratum-balanced, rank-sharded, seeded and resumable sampler.

    Args:
        strata: one hashable stratum per dataset item (e.g. ``TileRef.stratum``).
        num_samples: samples per epoch over all ranks (default: the dataset size). Rounded up
            to a multiple of ``world_size`` so every rank gets the same count.
        seed: base seed; the stream of epoch ``e`` depends only on ``(seed, e)``.
        rank: this process's rank.
        world_size: number of processes.
        replacement: draw with replacement (rare strata repeat); without, ``num_samples`` must
            not exceed the dataset size (weighted sampling without replacement).
        balance: exponent of the inverse stratum frequency.
    """

    def __init__(
        self,
        strata: Sequence[Hashable] | np.ndarray,
        num_samples: int | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        replacement: bool = True,
        balance: float = 1.0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        n = len(strata)
        total = n if num_samples is None else int(num_samples)
        self.per_rank = -(-total // world_size)
        self.total = self.per_rank * world_size
        if not replacement and self.total > n:
            raise ValueError(
                f"{self.total} samples per epoch without replacement exceed the {n} items"
            )
        self.weights = stratum_weights(strata, balance)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.replacement = replacement
        self.epoch = 0
        self._start = 0
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; the next iteration starts at its beginning (unless resumed)."""
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch

    def global_stream(self, epoch: int) -> np.ndarray:
        """Dataset indices of the whole epoch, all ranks, in order."""
        rng = np.random.default_rng([self.seed, epoch, 0x7E44AF])
        n = len(self.weights)
        if self.replacement:
            return rng.choice(n, size=self.total, replace=True, p=self.weights)
        keys = np.log(rng.random(n)) / self.weights  # Efraimidis–Spirakis keys
        return np.argsort(-keys, kind="stable")[: self.total]

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[SampleKey]:
        stream = self.global_stream(self.epoch)
        start, self._start = self._start, 0
        for k in range(start, self.per_rank):
            pos = k * self.world_size + self.rank
            self.position = k + 1
            yield int(stream[pos]), self.epoch, int(pos)

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        """Where this rank stands: ``position`` samples of ``epoch`` consumed.

        Args:
            position: samples actually consumed (a DataLoader prefetches ahead of the sampler's
                own count; :class:`terrafm.data.loader.PretrainLoader` passes the true one).
        """
        return {
            "epoch": self.epoch,
            "position": self.position if position is None else int(position),
            "seed": self.seed,
            "world_size": self.world_size,
            "total": self.total,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration yields the rest of the saved epoch.

        Raises:
            ValueError: the seed, world size or epoch length differ from the saved run's, which
                would make the resumed stream differ from the uninterrupted one.
        """
        for key, mine in (
            ("seed", self.seed),
            ("world_size", self.world_size),
            ("total", self.total),
        ):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"cannot resume sampler: saved {key}={state[key]}, now {mine}")
        self.epoch = int(state["epoch"])
        self._start = self.position = int(state["position"])
        if not 0 <= self._start <= self.per_rank:
            raise ValueError(
                f"cannot resume sampler: position {self._start} outside 0..{self.per_rank}"
            )
