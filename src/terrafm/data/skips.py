"""Bad-input bookkeeping: a sample error that names what is wrong, and a skip counter.

Corrupt row groups or GeoTIFFs, missing band columns, a cell missing a sensor, all-no-data tiles and
NaNs never reach the model: the dataset skips them with a logged reason and counts them here, or
raises :class:`SampleError` when configured to fail fast (docs/data.md, "Bad input").
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from terrafm.errors import DataError

__all__ = ["SampleError", "SkipLog", "TooManyBadSamples"]

log = logging.getLogger("terrafm.data")


class SampleError(DataError):
    """One sample cannot be used.

    Attributes:
        reason: a short category (``corrupt_geotiff``, ``missing_band``, ``missing_sensor``,
            ``all_nodata``, ``too_invalid``, ``non_finite``, ``corrupt_row_group``, ``mismatch``).
        where: what failed: file, row group, cell, tile, sensor.
        detail: what is wrong.
    """

    def __init__(self, reason: str, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail} [{reason}]")
        self.reason = reason
        self.where = where
        self.detail = detail


class TooManyBadSamples(DataError, RuntimeError):
    """More consecutive unusable samples than the loader tolerates (``max_retries``)."""


@dataclass
class SkipLog:
    """Counts and remembers skipped samples (one line per skip, the first ``keep`` kept verbatim).

    Attributes:
        counts: number of skips per reason.
        messages: the first ``keep`` skip messages.
        keep: how many messages to keep.
    """

    counts: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    keep: int = 1000

    def add(self, reason: str, message: str, *, emit: bool = True) -> None:
        """Record one skip; log it at WARNING unless ``emit`` is False (already logged)."""
        self.counts[reason] += 1
        if len(self.messages) < self.keep:
            self.messages.append(message)
        if emit:
            log.warning("skipped sample: %s", message)

    def add_error(self, err: SampleError, *, emit: bool = True) -> None:
        self.add(err.reason, str(err), emit=emit)

    def extend(self, records: Iterable[tuple[str, str]]) -> None:
        """Merge ``(reason, message)`` records collected elsewhere (e.g. in a DataLoader worker)."""
        for reason, message in records:
            self.add(reason, message, emit=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: the total and the count per reason."""
        if not self.total:
            return "skipped 0 samples"
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        return f"skipped {self.total} samples ({parts})"

    def state_dict(self) -> dict[str, object]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        counts = state.get("counts", {})
        assert isinstance(counts, dict)
        self.counts = Counter({str(k): int(v) for k, v in counts.items()})
