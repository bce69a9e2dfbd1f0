"""Evaluation harness (docs/design.md, "Evaluation protocols"): benchmark readers, frozen features, kNN, linear probe,
fine-tuning, segmentation probes (patch linear, UPerNet), metrics, reports and suites.

Quick use::

    import terrafm
    from terrafm.eval import evaluate, load_task

    model = terrafm.create_model("terrafm_base", pretrained="TerraFM-B.pth")
    task = load_task("geobench", "m-eurosat", "/data/geobench")
    result = evaluate(model, task, "knn", partition="0.01x_train")   # an EvalResult
    print(result.primary, result.primary_value, result.metrics)
"""

from terrafm.eval.datasets import BENCHMARKS, list_tasks, load_task
from terrafm.eval.features import Features, PatchFeatures, extract_features, extract_patch_tokens
from terrafm.eval.knn import knn_evaluate, knn_predict, knn_predict_multilabel
from terrafm.eval.report import markdown_report, write_report
from terrafm.eval.results import Counts, EvalResult
from terrafm.eval.runner import PROTOCOLS, EvalSettings, Evaluator, evaluate
from terrafm.eval.suite import SUITES, run_suite
from terrafm.eval.tasks import EvalDataset, EvalTask, SampleError, SensorSpec

__all__ = [
    "BENCHMARKS",
    "PROTOCOLS",
    "SUITES",
    "Counts",
    "EvalDataset",
    "EvalResult",
    "EvalSettings",
    "EvalTask",
    "Evaluator",
    "Features",
    "PatchFeatures",
    "SampleError",
    "SensorSpec",
    "evaluate",
    "extract_features",
    "extract_patch_tokens",
    "knn_evaluate",
    "knn_predict",
    "knn_predict_multilabel",
    "list_tasks",
    "load_task",
    "markdown_report",
    "run_suite",
    "write_report",
]
