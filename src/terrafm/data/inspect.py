"""A pre-flight report on pretraining roots: curation counts, strata and a timed read scan.

Used by ``terrafm data``; answers "what will the model see, and can every tile be read?" before
a long run (docs/design.md, "Pretraining data" curation).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from terrafm.data.curation import TileTable
from terrafm.data.loader import CurationConfig, QualityConfig, build_pretrain_dataset
from terrafm.data.skips import SampleError, SkipLog
from terrafm.data.tiles import TileSource

__all__ = ["DataReport", "inspect_roots"]


@dataclass
class DataReport:
    """What :func:`inspect_roots` found.

    Attributes:
        curation: counts from the sources and the curation (cells, dropped ocean cells ...).
        strata: tiles per (land-cover class, climate zone, region).
        scanned: tiles read by the scan.
        seconds: wall time of the scan.
        skips: skipped tiles of the scan, by reason.
        value_ranges: sensor -> (min, max) of the normalised inputs seen.
    """

    curation: dict[str, int]
    strata: Counter[tuple[int, str, str]]
    scanned: int = 0
    seconds: float = 0.0
    skips: SkipLog = field(default_factory=SkipLog)
    value_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def format(self) -> str:
        lines = ["curation:"] + [f"  {k}: {v}" for k, v in sorted(self.curation.items())]
        lines.append(f"strata ({len(self.strata)}; tiles per land cover x climate x region):")
        for (cls, climate, region), n in self.strata.most_common(20):
            lines.append(f"  {cls:>4} {climate:<10} {region:<16} {n}")
        if len(self.strata) > 20:
            lines.append(f"  ... {len(self.strata) - 20} more")
        if self.scanned:
            rate = self.scanned / max(self.seconds, 1e-9)
            lines.append(f"scan: {self.scanned} tiles in {self.seconds:.1f} s ({rate:.1f} tiles/s)")
            lines.append(f"  {self.skips.summary()}")
            lines += [f"  {m}" for m in self.skips.messages[:10]]
            for s, (lo, hi) in self.value_ranges.items():
                lines.append(f"  {s}: normalised values in [{lo:.2f}, {hi:.2f}]")
        return "\n".join(lines)


def inspect_roots(
    roots: Sequence[str | Path | TileSource],
    sensors: Sequence[str],
    *,
    curation: CurationConfig | None = None,
    quality: QualityConfig | None = None,
    scan: int = 16,
    seed: int = 0,
) -> DataReport:
    """Open and curate ``roots`` as pretraining would, then read ``scan`` tiles spread evenly.

    Raises:
        SampleError: on the first bad tile when ``quality.fail_fast`` is set.
    """
    qual = quality or QualityConfig()
    ds = build_pretrain_dataset(roots, sensors, curation=curation, quality=qual, seed=seed)
    tiles = ds.tiles
    refs = tiles.refs
    strata: Counter[tuple[int, str, str]] = Counter()
    if isinstance(refs, TileTable):
        ids, counts = np.unique(refs.stratum_ids, return_counts=True)
        strata.update({refs.strata[int(i)]: int(n) for i, n in zip(ids, counts)})
    else:
        strata.update(r.stratum for r in refs)
    report = DataReport(dict(ds.report), strata)  # type: ignore[attr-defined]
    picks = np.unique(np.linspace(0, len(tiles) - 1, min(scan, len(tiles))).astype(int))
    t0 = time.perf_counter()
    for i in picks if scan > 0 else []:
        try:
            inputs, dropped = tiles.load(int(i))
        except SampleError as e:
            if qual.fail_fast:
                raise
            report.skips.add_error(e, emit=False)
            continue
        for d in dropped:
            report.skips.add(f"dropped_sensor_{d.reason}", str(d), emit=False)
        for s, x in inputs.items():
            lo, hi = report.value_ranges.get(s, (np.inf, -np.inf))
            report.value_ranges[s] = (min(lo, float(x.min())), max(hi, float(x.max())))
    report.scanned = len(picks) if scan > 0 else 0
    report.seconds = time.perf_counter() - t0
    return report
