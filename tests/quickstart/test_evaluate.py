"""The quickstart's probes run through the shared evaluator and give the numbers of plain calls.

The reference below is the quickstart's former implementation, written out with the protocol
functions themselves (features extracted directly, kNN per draw, the probes trained by hand): the
evaluator must reproduce its numbers exactly for the same encoder and seed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import terrafm
from terrafm.eval import extract_features, extract_patch_tokens, knn_evaluate
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.eval.metrics import rankme
from terrafm.eval.retrieval import match_ids, retrieval_metrics
from terrafm.eval.runner import Evaluator
from terrafm.eval.segmentation import SegSettings, evaluate_patch_probe, train_patch_probe
from terrafm.eval.subsets import fraction_indices
from terrafm.quickstart.evaluate import (
    ProbeConfig,
    cross_sensor,
    evaluate_encoder,
    probe_settings,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from test_protocols import _toy

CFG = ProbeConfig(k=3, fraction=0.4, fraction_draws=3, linear_epochs=3, seg_epochs=2, seg_batch=4)
SEED = 5


def _knn_reference(x, y, tx, ty, n_classes):  # type: ignore[no-untyped-def]
    draws, sizes = [], []
    for d in range(CFG.fraction_draws):
        idx = list(fraction_indices(y, CFG.fraction, SEED + d))
        sizes.append(len(idx))
        draws.append(float(knn_evaluate(x[idx], y[idx], tx, ty, n_classes, ks=(CFG.k,))["knn3"]))
    full = float(knn_evaluate(x, y, tx, ty, n_classes, ks=(CFG.k,))["knn3"])
    return {"knn_top1_full": full, "knn_top1_fraction": sum(draws) / len(draws),
            "knn_top1_fraction_draws": draws, "fraction_train_sizes": sizes}  # fmt: skip


def _reference(model, cls_task, seg_task, sensors):  # type: ignore[no-untyped-def]
    train = extract_features(model, cls_task.dataset("train", sensors), progress=False)
    test = extract_features(model, cls_task.dataset("test", sensors), progress=False)
    x, tx = train.pooled("cls"), test.pooled("cls")
    out: dict[str, Any] = _knn_reference(x, train.labels, tx, test.labels, cls_task.num_classes)
    probe = train_linear_probe(x, train.labels, cls_task.num_classes,
                               ProbeSettings(epochs=CFG.linear_epochs, seed=SEED))  # fmt: skip
    out["linear_top1"] = float(probe_metrics(predict_linear(probe, tx), test.labels, False)["top1"])
    out.update(rankme_cls=rankme(tx.float()), dim=int(tx.shape[1]), n_train=6, n_test=3)
    kw: dict[str, Any] = {"tile": seg_task.image_size or 64, "progress": False}
    ptrain = extract_patch_tokens(model, seg_task.dataset("train", sensors), **kw)
    ptest = extract_patch_tokens(model, seg_task.dataset("test", sensors), **kw)
    settings = SegSettings(CFG.seg_epochs, CFG.seg_batch, CFG.seg_lr, 0.01, seed=SEED)
    head = train_patch_probe(ptrain, seg_task.num_classes, settings, seg_task.ignore_index, 16,
                             "cpu", False)  # fmt: skip
    res = evaluate_patch_probe(head, ptest, seg_task.num_classes, seg_task.ignore_index)
    out.update(
        miou=float(res["miou"]),
        rankme_patch=rankme(ptest.tokens.reshape(-1, ptest.tokens.shape[-1]).float()),
        per_class_iou=dict(zip(seg_task.classes, (float(v) for v in res["per_class_iou"]))),
        n_train_chips=len(ptrain.ids),
        n_test_chips=len(ptest.ids),
    )
    return out, (train, test)


def test_quickstart_numbers_equal_the_former_plain_computation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = terrafm.create_model("terrafm_tiny").eval()
    cls_task, seg_task = _toy(tmp_path), _toy(tmp_path, "segmentation")
    sets = [("s1",), ("s2_l2a",), ("s1", "s2_l2a")]
    classifier = Evaluator(model, cls_task, probe_settings(CFG, SEED))
    got = evaluate_encoder(model, cls_task, seg_task, sets, CFG, SEED, classifier)
    kept = {}
    for sensors in sets:
        ref, kept["+".join(sensors)] = _reference(model, cls_task, seg_task, sensors)
        new = {k: v for k, v in got["+".join(sensors)].items() if k != "seconds"}
        assert new == ref, sensors
    # across sensors, from the classifier's kept features
    cross = cross_sensor(classifier, CFG, SEED)
    q, g = kept["s1"][1], kept["s2_l2a"][1]
    qi, gi = match_ids(q.ids, g.ids)
    ref_ret = retrieval_metrics(q.pooled("cls")[qi], g.pooled("cls")[gi], ("s1", "s2"))
    assert cross["retrieval"] == {**ref_ret, "n_gallery": 3, "query": "s1", "gallery": "s2_l2a",
                                  "split": "test"}  # fmt: skip
    fused = kept["s1+s2_l2a"][0]
    for name in ("s2_l2a", "s1"):
        test = kept[name][1]
        ref = _knn_reference(fused.pooled("cls"), fused.labels, test.pooled("cls"), test.labels,
                             cls_task.num_classes)  # fmt: skip
        assert cross["missing_sensor"][name] == ref, name


def test_the_classifier_must_hold_the_model() -> None:
    from terrafm.quickstart.evaluate import evaluate_sensors

    class _Task:
        kind = "classification"

    other = Evaluator(torch.nn.Identity(), _Task())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must hold this model"):
        evaluate_sensors(torch.nn.Linear(1, 1), _Task(), _Task(), ("s1",), CFG, 0, other)  # type: ignore[arg-type]
