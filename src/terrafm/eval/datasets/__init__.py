"""Benchmark readers and :func:`load_task`, the one entry point that builds an evaluation task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terrafm.eval.tasks import EvalTask

__all__ = ["BENCHMARKS", "list_tasks", "load_task"]

BENCHMARKS = ("geobench", "copernicus", "landslide4sense", "eurosat", "folder")


def list_tasks(benchmark: str) -> list[str]:
    """Task names a benchmark reader knows (``folder`` takes any task folder)."""
    if benchmark == "geobench":
        from terrafm.eval.datasets.geobench import GEOBENCH_TASKS

        return sorted(GEOBENCH_TASKS)
    if benchmark == "copernicus":
        from terrafm.eval.datasets.copernicus import COPERNICUS_TASKS

        return sorted(COPERNICUS_TASKS)
    if benchmark == "landslide4sense":
        return ["landslide4sense"]
    if benchmark == "eurosat":
        return ["eurosat-ms"]
    if benchmark == "folder":
        return []
    raise ValueError(f"unknown benchmark {benchmark!r}; available: {list(BENCHMARKS)}")


def load_task(
    benchmark: str,
    name: str | None,
    data_root: str | Path,
    *,
    image_size: int | None = None,
    **options: Any,
) -> EvalTask:
    """Build a task from data on disk.

    Args:
        benchmark: one of :data:`BENCHMARKS`.
        name: task name (see :func:`list_tasks`); for ``folder`` an optional sub-folder of
            ``data_root``; ignored by ``landslide4sense`` and ``eurosat``.
        data_root: the benchmark's root folder as distributed (GEO-Bench: the folder holding
            ``classification_v1.0/``; a task folder for ``folder``).
        image_size: override of the protocol's input size (a multiple of 16).
        options: reader options (``eurosat``: ``fractions``, ``train_per_class``, ``seed``).
    """
    root = Path(data_root)
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist")
    if options and benchmark != "eurosat":
        raise TypeError(f"benchmark {benchmark!r} takes no options {sorted(options)}")
    if benchmark == "geobench":
        from terrafm.eval.datasets.geobench import load_geobench

        return load_geobench(_need(name, benchmark), root, image_size=image_size)
    if benchmark == "copernicus":
        from terrafm.eval.datasets.copernicus import load_copernicus

        return load_copernicus(_need(name, benchmark), root, image_size=image_size)
    if benchmark == "landslide4sense":
        from terrafm.eval.datasets.landslide4sense import load_landslide4sense

        return load_landslide4sense(root, image_size=image_size or 128)
    if benchmark == "eurosat":
        from terrafm.eval.datasets.eurosat import load_eurosat

        return load_eurosat(root, image_size=image_size or 64, **options)
    if benchmark == "folder":
        from terrafm.eval.datasets.folder import load_folder_task

        if name and (root / name / "task.json").is_file():
            root = root / name
        return load_folder_task(root, image_size=image_size)
    raise ValueError(f"unknown benchmark {benchmark!r}; available: {list(BENCHMARKS)}")


def _need(name: str | None, benchmark: str) -> str:
    if not name:
        raise ValueError(f"benchmark {benchmark!r} needs a task name: {list_tasks(benchmark)}")
    return name
