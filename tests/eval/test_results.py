"""The typed result (``EvalResult``) and the evaluator that keeps features across protocols."""

from __future__ import annotations

import json

import pytest
import torch
from test_protocols import _toy

from terrafm.eval import EvalResult, Evaluator, evaluate, extract_features, knn_evaluate
from terrafm.eval.report import write_report
from terrafm.eval.results import Counts, iou_key
from terrafm.eval.subsets import fraction_indices

FAST = {"progress": False}
# The keys of a kNN record as result.json has always written them, in order.
KNN_KEYS = ["benchmark", "task", "protocol", "sensors", "partition", "metrics", "primary",
            "n_train", "n_test", "train_subset", "skipped", "settings", "notes", "seconds"]  # fmt: skip


class _Counting(torch.nn.Module):
    """Wraps an encoder and counts the images it encodes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.images = model, 0
        self.patch_size = model.patch_size

    def forward_features(self, inputs, masks=None):  # type: ignore[no-untyped-def]
        self.images += next(iter(inputs.values())).shape[0]
        kw = {} if masks is None else {"masks": masks}
        return self.model.forward_features(inputs, **kw)


def test_records_keep_their_keys_and_read_back(tmp_path, tiny_model):
    task = _toy(tmp_path)
    knn = evaluate(tiny_model, task, "knn", "s1", label_fraction=0.5, **FAST)
    assert isinstance(knn, EvalResult)
    assert list(knn.to_dict()) == KNN_KEYS
    assert knn.primary == "top1" and knn.primary_value == knn.metrics["top1"]
    assert knn.counts == Counts(train=3, test=3) and knn.subset == "0.5 of labels"
    lin = evaluate(tiny_model, task, "linear", "s2_l2a", epochs=2, batch_size=4, **FAST)
    assert lin.counts.val == 3 and lin.to_dict()["n_val"] == 3 and "val_top1" in lin.metrics
    ret = evaluate(tiny_model, task, "retrieval", **FAST)
    assert ret.details == {"query": ["s1"], "gallery": ["s2_l2a"]}
    assert ret.to_dict()["query"] == ["s1"] and ret.counts.train == 0
    failed = EvalResult.failure("folder", "x", "knn", ["s1"], None, "FileNotFoundError: gone")
    for r in (knn, lin, ret, failed):
        record = json.loads(json.dumps(r.to_dict()))
        assert EvalResult.from_dict(record) == r
        assert EvalResult.from_dict(record).to_dict() == record
    assert failed.to_dict() == {"benchmark": "folder", "task": "x", "protocol": "knn",
                                "sensors": ["s1"], "partition": "default",
                                "error": "FileNotFoundError: gone"}  # fmt: skip
    # code written against the dict records reads the same keys
    assert knn["metrics"] == knn.metrics and knn["n_train"] == 3 and "error" in failed
    assert dict(knn) == knn.to_dict() and {**failed} == failed.to_dict()
    # result.json holds the records; report.md reads them back
    json_path, md_path = write_report([knn, failed], tmp_path / "out", "t", {"name": "tiny"})
    on_disk = json.loads(json_path.read_text())["results"]
    assert on_disk[0] == json.loads(json.dumps(knn.to_dict())) and on_disk[1]["error"]
    assert "failed: FileNotFoundError: gone" in md_path.read_text()


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="primary metric 'top1' is not among"):
        EvalResult("b", "t", "knn", ["s1"], metrics={"miou": 1.0}, primary="top1")
    with pytest.raises(ValueError, match="keys \\['task'\\] missing"):
        EvalResult.from_dict({"benchmark": "b", "protocol": "knn"})
    with pytest.raises(ValueError, match="no 'metrics'"):
        EvalResult.from_dict({"benchmark": "b", "task": "t", "protocol": "knn"})
    with pytest.raises(ValueError, match="reuse the record's keys"):
        EvalResult("b", "t", "knn", [], metrics={"top1": 1.0}, primary="top1",
                   details={"n_train": 3})  # fmt: skip
    assert iou_key("Permanent water bodies") == "iou_permanent_water_bodies"


def test_evaluator_extracts_each_split_once(tmp_path, tiny_model):
    task = _toy(tmp_path)  # 6 train, 3 val, 3 test
    counting = _Counting(tiny_model)
    ev = Evaluator(counting, task, progress=False, val_metrics=False)
    for d in range(3):
        ev.run("knn", "s1", label_fraction=0.5, seed=d)
    ev.run("knn", "s1")
    ev.run("linear", "s1", epochs=2, batch_size=4)
    assert counting.images == 6 + 3  # train and test of s1, once
    ev.run("retrieval", ["s1", "s2_l2a"])
    assert counting.images == 6 + 3 + 3  # only the S2 test split is new
    ev.run("linear", "s1", epochs=2, batch_size=4, flips=True)
    assert counting.images == 6 + 3 + 3 + 4 * 6  # four flip views of the train split


def test_evaluator_numbers_match_a_direct_computation(tmp_path, tiny_model):
    """kNN (at a label fraction, and trained fused / tested on one sensor) from plain calls."""
    task = _toy(tmp_path)
    ev = Evaluator(tiny_model, task, progress=False, ks=(3,))

    def feats(split, sensors):  # type: ignore[no-untyped-def]
        return extract_features(tiny_model, task.dataset(split, sensors), progress=False)

    fused, s2 = feats("train", ("s1", "s2_l2a")), feats("test", ("s2_l2a",))
    for seed in (0, 1):
        idx = fraction_indices(fused.labels, 0.5, seed)
        ref = knn_evaluate(fused.pooled()[idx], fused.labels[idx], s2.pooled(), s2.labels, 3,
                           ks=(3,))["knn3"]  # fmt: skip
        r = ev.run("knn", "s1,s2_l2a", test_sensors="s2_l2a", label_fraction=0.5, seed=seed)
        assert r.primary_value == ref and r.counts.train == len(idx)
        assert r.sensors == ["s1", "s2_l2a"] and r.details["test_sensors"] == ["s2_l2a"]
    with pytest.raises(ValueError, match="test_sensors applies to knn and linear"):
        ev.run("retrieval", test_sensors="s1")


def test_evaluator_runs_both_extractions_alike(tmp_path, tiny_model, monkeypatch):
    """Frozen features and patch tokens get the same device, dtype, cache, workers and limits."""
    import terrafm.eval.runner as runner

    seen: dict[str, dict[str, object]] = {}

    class _Stop(Exception):
        pass

    def recorder(name):  # type: ignore[no-untyped-def]
        def extract(model, ds, **kw):  # type: ignore[no-untyped-def]
            seen[name] = kw
            raise _Stop

        return extract

    monkeypatch.setattr(runner, "extract_features", recorder("features"))
    monkeypatch.setattr(runner, "extract_patch_tokens", recorder("patches"))
    running = {"device": "cpu", "dtype": "bfloat16", "cache_dir": str(tmp_path / "c"),
               "num_workers": 3, "progress": False, "max_skipped": 0.25}  # fmt: skip
    ev = Evaluator(tiny_model, _toy(tmp_path), feature_batch=5, tile=16, **running)
    with pytest.raises(_Stop):
        ev.features("test", "s1", views=4)
    with pytest.raises(_Stop):
        ev.patch_tokens("test", "s1")
    assert seen["features"] == {"batch_size": 5, "views": 4, **running}
    assert seen["patches"] == {"tile": 16, "batch_size": 5, **running}
