"""Whole published tables in one call (docs/design.md, "Evaluation protocols"): ``run_suite("geobench-knn", ...)``.

============================  ============================================================
suite                         rows
============================  ============================================================
``geobench-knn``              kNN on m-eurosat, m-bigearthnet, m-so2sat, m-brick-kiln with
                              100 % (``default``) and 1 % (``0.01x_train``) of training labels
``geobench-finetune``         fine-tuning on the four classification tasks (learning rate
                              picked on val among 3e-5, 1e-4, 3e-4); patch linear probe on
                              m-cashew-plant and m-SA-crop-type
``copernicus``                Cloud-S2, DFC2020-S1/-S2 (UPerNet); EuroSAT-S1/-S2,
                              BigEarthNet-S1/-S2, LCZ-S2 (linear probe, flip views)
``landslide4sense``           UPerNet on the S2 bands
============================  ============================================================

Rows run through one :class:`~terrafm.eval.runner.Evaluator` per task, so rows on the same task
(100 % and 1 % of labels) share its features. A row whose data is missing or broken is recorded
as a failed :class:`~terrafm.eval.results.EvalResult` and the suite goes on (unless
``fail_fast``). Row settings (flip views, the learning-rate sweep) apply only where the caller
left that setting at its default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from terrafm.eval.datasets import load_task
from terrafm.eval.results import EvalResult
from terrafm.eval.runner import EvalSettings, Evaluator

__all__ = ["SUITES", "SuiteRow", "run_suite"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteRow:
    benchmark: str
    task: str
    protocol: str
    sensors: tuple[str, ...] | None = None
    partition: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


# Learning rates the fine-tuning rows choose from on the validation split (choice).
FINETUNE_LRS = (3e-5, 1e-4, 3e-4)
_GEO_CLS = ("m-eurosat", "m-bigearthnet", "m-so2sat", "m-brick-kiln")
SUITES: dict[str, tuple[SuiteRow, ...]] = {
    "geobench-knn": tuple(
        SuiteRow("geobench", t, "knn", partition=p)
        for t in _GEO_CLS
        for p in ("default", "0.01x_train")
    ),
    "geobench-finetune": tuple(
        SuiteRow("geobench", t, "finetune", overrides={"lrs": FINETUNE_LRS}) for t in _GEO_CLS
    )
    + tuple(SuiteRow("geobench", t, "seg-linear") for t in ("m-cashew-plant", "m-sa-crop-type")),
    "copernicus": (
        SuiteRow("copernicus", "cloud_s2", "seg-upernet"),
        SuiteRow("copernicus", "eurosat_s1", "linear", overrides={"flips": True}),
        SuiteRow("copernicus", "eurosat_s2", "linear", overrides={"flips": True}),
        SuiteRow("copernicus", "bigearthnet_s1s2", "linear", ("s1",), overrides={"flips": True}),
        SuiteRow(
            "copernicus", "bigearthnet_s1s2", "linear", ("s2_l2a",), overrides={"flips": True}
        ),
        SuiteRow("copernicus", "dfc2020_s1s2", "seg-upernet", ("s1",)),
        SuiteRow("copernicus", "dfc2020_s1s2", "seg-upernet", ("s2_l1c",)),
        SuiteRow("copernicus", "lcz_s2", "linear", overrides={"flips": True}),
    ),
    "landslide4sense": (SuiteRow("landslide4sense", "landslide4sense", "seg-upernet"),),
}


def _row_overrides(row: SuiteRow, settings: EvalSettings) -> dict[str, Any]:
    """A row's protocol settings, where the caller left the setting at its default."""
    defaults = EvalSettings()
    out = {k: v for k, v in row.overrides.items() if getattr(settings, k) == getattr(defaults, k)}
    if settings.lr is not None:  # a learning rate given by the caller beats the row's sweep
        out.pop("lrs", None)
    return out


def run_suite(
    name: str,
    model: nn.Module,
    data_root: str | Path,
    settings: EvalSettings | None = None,
    *,
    fail_fast: bool = False,
    on_result: Callable[[EvalResult], None] | None = None,
) -> list[EvalResult]:
    """Run every row of a suite; a failed row becomes a result with ``error`` set."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; available: {sorted(SUITES)}")
    settings = settings or EvalSettings()
    evaluator: tuple[tuple[str, str], Evaluator] | None = None  # the current task's
    results: list[EvalResult] = []
    rows = SUITES[name]
    for i, row in enumerate(rows, 1):
        log.info(
            "suite %s [%d/%d]: %s/%s %s", name, i, len(rows), row.benchmark, row.task, row.protocol
        )
        try:
            key = (row.benchmark, row.task)
            if evaluator is None or evaluator[0] != key:
                evaluator = None  # let the previous task's features go first
                task = load_task(row.benchmark, row.task, data_root, image_size=settings.image_size)
                evaluator = (key, Evaluator(model, task, settings))
            res = evaluator[1].run(row.protocol, row.sensors, partition=row.partition,
                                   **_row_overrides(row, settings))  # fmt: skip
        except Exception as e:
            if fail_fast:
                raise
            log.error(
                "suite %s: %s/%s %s failed: %s", name, row.benchmark, row.task, row.protocol, e
            )
            res = EvalResult.failure(row.benchmark, row.task, row.protocol,
                                     list(row.sensors or ()), row.partition,
                                     f"{type(e).__name__}: {e}")  # fmt: skip
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results
