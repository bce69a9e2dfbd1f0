"""Published results that runs are set beside (docs/design.md, "Evaluation protocols / GEO-Bench v1"-§6.3), as data.

Each :class:`Published` row is one number of one table: benchmark, task, protocol, the sensors fed,
the training partition, the metric, the model and the value (%). :func:`published_for` finds the
rows a run is comparable with. Task names are the base names of :mod:`terrafm.eval.datasets`
(Copernicus-Bench's two-sensor tasks are ``bigearthnet`` / ``dfc2020`` with the sensor telling the
row apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PUBLISHED", "Published", "base_task", "published_for"]


@dataclass(frozen=True)
class Published:
    benchmark: str
    task: str
    protocol: str
    sensors: tuple[str, ...]
    partition: str  # "default" = 100 % of training labels
    metric: str
    model: str
    value: float
    source: str


_KNN_SRC = "TerraFM (ICLR 2026) GEO-Bench kNN table; baselines from Galileo"
_FT_SRC = "TerraFM (ICLR 2026) GEO-Bench fine-tuning / linear-probe table"
_COP_SRC = "TerraFM (ICLR 2026) Copernicus-Bench table (3-run means)"
_L4S_SRC = "TerraFM (ICLR 2026) Landslide4Sense table"

_GEO_SENSORS = {"m-eurosat": ("s2_l1c",), "m-bigearthnet": ("s2_l2a",), "m-so2sat": ("s2_l1c",),
                "m-brick-kiln": ("s2_l1c",), "m-cashew-plant": ("s2_l2a",), "m-sa-crop-type": ("s2_l2a",)}  # fmt: skip
# model -> task -> (100 %, 1 %) kNN top-1 (m-bigearthnet: micro-F1), k = 20.
_KNN = {
    "Galileo-B": {"m-eurosat": (93.0, 56.6), "m-bigearthnet": (59.0, 36.5), "m-so2sat": (54.8, 43.2), "m-brick-kiln": (90.7, 78.0)},
    "CROMA-B": {"m-eurosat": (85.6, 51.3), "m-bigearthnet": (58.8, 44.7), "m-so2sat": (48.8, 33.8), "m-brick-kiln": (92.6, 85.1)},
    "TerraFM-B": {"m-eurosat": (94.2, 59.3), "m-bigearthnet": (68.7, 49.4), "m-so2sat": (55.1, 41.6), "m-brick-kiln": (94.5, 85.6)},
    "TerraFM-L": {"m-eurosat": (95.1, 62.1), "m-bigearthnet": (69.4, 50.6), "m-so2sat": (55.9, 41.1), "m-brick-kiln": (93.0, 82.2)},
}  # fmt: skip
_FT_TASKS = (
    "m-eurosat",
    "m-bigearthnet",
    "m-so2sat",
    "m-brick-kiln",
    "m-cashew-plant",
    "m-sa-crop-type",
)
_FT = {
    "TerraFM-B": (98.1, 72.6, 64.9, 98.7, 34.1, 33.0),
    "TerraFM-L": (98.6, 73.1, 66.6, 99.0, 37.2, 34.5),
    "Galileo-B": (97.7, 70.7, 63.3, 98.7, 33.0, 30.1),
}
_COP_MODELS = (
    "Supervised ViT-B",
    "Random ViT-B",
    "SoftCon",
    "CROMA",
    "DOFA",
    "Copernicus-FM",
    "TerraFM-B",
)
# (task, protocol, sensors, metric) -> values in _COP_MODELS order.
_COP = {
    ("cloud_s2", "seg-upernet", ("s2_l1c",), "miou"): (59.4, 60.4, 66.9, 65.0, 65.0, 66.7, 67.9),
    ("eurosat_s1", "linear", ("s1",), "top1"): (81.5, 75.4, 83.6, 83.9, 81.7, 87.2, 87.8),
    ("eurosat_s2", "linear", ("s2_l1c",), "top1"): (97.6, 92.5, 96.7, 97.0, 97.2, 97.9, 99.1),
    ("bigearthnet", "linear", ("s1",), "micro_map"): (70.6, 63.8, 78.7, 70.8, 70.5, 77.9, 76.9),
    ("bigearthnet", "linear", ("s2_l2a",), "micro_map"): (80.1, 71.6, 83.6, 76.4, 75.5, 79.0, 84.4),
    ("dfc2020", "seg-upernet", ("s1",), "miou"): (50.8, 45.4, 52.8, 52.7, 49.7, 52.4, 55.4),
    ("dfc2020", "seg-upernet", ("s2_l1c",), "miou"): (66.2, 62.3, 64.1, 66.5, 61.8, 64.5, 63.8),
    ("lcz_s2", "linear", ("s2_l1c",), "top1"): (85.3, 77.4, 83.6, 84.1, 83.0, 84.4, 87.0),
}


def _rows() -> list[Published]:
    rows: list[Published] = []
    for model, tasks in _KNN.items():
        for task, (full, one) in tasks.items():
            metric = "micro_f1" if task == "m-bigearthnet" else "top1"
            for part, v in (("default", full), ("0.01x_train", one)):
                rows.append(
                    Published(
                        "geobench",
                        task,
                        "knn",
                        _GEO_SENSORS[task],
                        part,
                        metric,
                        model,
                        v,
                        _KNN_SRC,
                    )
                )
    for model, values in _FT.items():
        for task, v in zip(_FT_TASKS, values):
            seg = task in ("m-cashew-plant", "m-sa-crop-type")
            protocol, metric = (
                ("seg-linear", "miou")
                if seg
                else ("finetune", "micro_f1" if task == "m-bigearthnet" else "top1")
            )
            rows.append(
                Published(
                    "geobench",
                    task,
                    protocol,
                    _GEO_SENSORS[task],
                    "default",
                    metric,
                    model,
                    v,
                    _FT_SRC,
                )
            )
    for (task, protocol, sensors, metric), cop in _COP.items():
        for model, v in zip(_COP_MODELS, cop):
            rows.append(
                Published(
                    "copernicus", task, protocol, sensors, "default", metric, model, v, _COP_SRC
                )
            )
    for model, miou, iou in (("TerraFM-B", 70.8, 43.1), ("Prithvi-EO-2.0 300M", 65.0, 31.5)):
        for metric, v in (("miou", miou), ("iou_landslide", iou)):
            rows.append(
                Published(
                    "landslide4sense",
                    "landslide4sense",
                    "seg-upernet",
                    ("s2_l1c",),
                    "default",
                    metric,
                    model,
                    v,
                    _L4S_SRC,
                )
            )
    return rows


PUBLISHED: tuple[Published, ...] = tuple(_rows())


def base_task(benchmark: str, task: str) -> str:
    """The task name published rows use (``bigearthnet_s2`` -> ``bigearthnet`` ...)."""
    if benchmark == "copernicus":
        for base in ("bigearthnet", "dfc2020"):
            if task.startswith(base):
                return base
    return task


def published_for(
    benchmark: str, task: str, protocol: str, sensors: Sequence[str], partition: str | None = None
) -> list[Published]:
    """Published rows comparable with a run (same task, protocol, sensors and partition)."""
    base = base_task(benchmark, task)
    part = partition or "default"
    return [
        r
        for r in PUBLISHED
        if r.benchmark == benchmark and r.task == base and r.protocol == protocol
        and r.sensors == tuple(sensors) and r.partition == part
    ]  # fmt: skip
