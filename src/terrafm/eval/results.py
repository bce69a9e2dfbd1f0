"""The typed record of one evaluation run: :class:`EvalResult`.

Every protocol of :mod:`terrafm.eval.runner` returns one; the suites, the reports, ``terrafm eval``
and the quickstart read it. :meth:`EvalResult.to_dict` gives the JSON record written to
``result.json`` (keys in docs/evaluation.md, "Result records"), and :meth:`EvalResult.from_dict`
reads one back. Code written against the plain-dict records keeps working: ``result["metrics"]``,
``"error" in result``, ``result.get("skipped")`` and ``dict(result)`` read the same keys as
:meth:`to_dict`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Counts", "EvalResult", "as_result", "iou_key"]

# Keys of the JSON record that map onto fields; any other key is a protocol detail.
_CORE = (
    "benchmark", "task", "protocol", "sensors", "partition", "metrics", "primary", "n_train",
    "n_val", "n_test", "train_subset", "skipped", "settings", "notes", "seconds", "error",
)  # fmt: skip


def iou_key(class_name: str) -> str:
    """The metric key of one class's IoU: ``"Tree cover"`` -> ``"iou_tree_cover"``."""
    return "iou_" + re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


@dataclass(frozen=True)
class Counts:
    """Samples a run used: training (after any subset), validation (``None``: not read), test.

    Segmentation counts tiles, retrieval counts the query / gallery pairs (``train`` = 0).
    """

    train: int = 0
    test: int = 0
    val: int | None = None


@dataclass
class EvalResult:
    """One protocol on one task with one sensor choice.

    Attributes:
        benchmark, task, protocol: what ran.
        sensors: the sensors fed, as ``["s1", "s2_l2a"]`` (fused) or, for retrieval,
            ``["query->gallery"]``.
        partition: the named training partition asked for (``"default"`` when none).
        metrics: every metric in %, the headline one first.
        primary: the key of the headline metric in ``metrics``.
        counts: the samples used (:class:`Counts`).
        subset: the training subset actually used (``"default"``, ``"0.01 of labels"``,
            ``"1-shot"``, a partition name ...); the record's ``train_subset``.
        skipped: samples that could not be read and were left out.
        settings: the resolved settings (published defaults filled in).
        notes: the task's notes on how its data differ from the published benchmark.
        seconds: wall time of the run.
        details: protocol-specific extras, kept in the record as top-level keys (fine-tuning:
            ``lr``, ``lr_sweep``; seg-linear: ``tile``; retrieval: ``query``, ``gallery``).
        error: the failure message of a suite row that could not run (then no metrics).
    """

    benchmark: str
    task: str
    protocol: str
    sensors: list[str]
    partition: str = "default"
    metrics: dict[str, float] = field(default_factory=dict)
    primary: str = ""
    counts: Counts = field(default_factory=Counts)
    subset: str = "default"
    skipped: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is None and self.primary not in self.metrics:
            raise ValueError(
                f"{self.benchmark}/{self.task} {self.protocol}: primary metric {self.primary!r} "
                f"is not among the metrics {sorted(self.metrics)}"
            )
        clash = sorted(set(self.details) & set(_CORE))
        if clash:
            raise ValueError(f"result details may not reuse the record's keys {clash}")

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def primary_value(self) -> float:
        """The headline metric's value (in %)."""
        if self.error is not None:
            raise ValueError(f"{self.benchmark}/{self.task} {self.protocol} failed: {self.error}")
        return self.metrics[self.primary]

    @classmethod
    def failure(
        cls,
        benchmark: str,
        task: str,
        protocol: str,
        sensors: list[str],
        partition: str | None,
        error: str,
    ) -> EvalResult:
        """The record of a run that could not complete."""
        return cls(benchmark, task, protocol, list(sensors), partition or "default", error=error)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (keys as ``result.json`` has always written them)."""
        head: dict[str, Any] = {
            "benchmark": self.benchmark,
            "task": self.task,
            "protocol": self.protocol,
            "sensors": list(self.sensors),
            "partition": self.partition,
        }
        if self.error is not None:
            return {**head, "error": self.error}
        out = {**head, "metrics": dict(self.metrics), "primary": self.primary,
               "n_train": self.counts.train, "n_test": self.counts.test}  # fmt: skip
        if self.counts.val is not None:
            out["n_val"] = self.counts.val
        out["train_subset"] = self.subset
        out.update(self.details)
        out.update(skipped=self.skipped, settings=dict(self.settings), notes=list(self.notes),
                   seconds=self.seconds)  # fmt: skip
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EvalResult:
        """Read a record written by :meth:`to_dict` (or by terrafm before the typed results)."""
        missing = [k for k in ("benchmark", "task", "protocol") if k not in record]
        if missing:
            raise ValueError(f"not an evaluation record: keys {missing} missing")
        head = (
            str(record["benchmark"]),
            str(record["task"]),
            str(record["protocol"]),
            list(record.get("sensors", [])),
            str(record.get("partition") or "default"),
        )
        if record.get("error") is not None:
            return cls(*head, error=str(record["error"]))
        if "metrics" not in record or "primary" not in record:
            raise ValueError(
                f"evaluation record {head[0]}/{head[1]} {head[2]}: no 'metrics' / 'primary'"
            )
        val = record.get("n_val")
        return cls(
            *head,
            metrics={k: float(v) for k, v in record["metrics"].items()},
            primary=str(record["primary"]),
            counts=Counts(
                int(record.get("n_train", 0)),
                int(record.get("n_test", 0)),
                None if val is None else int(val),
            ),
            subset=str(record.get("train_subset", head[4])),
            skipped=int(record.get("skipped", 0)),
            settings=dict(record.get("settings", {})),
            notes=list(record.get("notes", [])),
            seconds=float(record.get("seconds", 0.0)),
            details={k: v for k, v in record.items() if k not in _CORE},
        )

    # Read access by the record's keys, for code written against the plain-dict records.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:  # so that dict(result) and {**result} give the record
        return list(self.to_dict())


def as_result(r: EvalResult | Mapping[str, Any]) -> EvalResult:
    """An :class:`EvalResult` from itself or from its JSON record."""
    return r if isinstance(r, EvalResult) else EvalResult.from_dict(r)
