"""Protocols end to end on tiny tasks: kNN, linear probe, fine-tuning, segmentation probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terrafm.eval import evaluate
from terrafm.eval.datasets.folder import FolderSample, load_folder_task, write_folder_task
from terrafm.eval.linear import ProbeSettings, predict_linear, probe_metrics, train_linear_probe
from terrafm.sensors import get_sensor

S2 = list(get_sensor("s2_l2a").band_names)
FAST = {"progress": False}


def _toy(tmp_path, kind="classification", n=12, size=32):
    """Three classes told apart by brightness (S2) and backscatter (S1)."""
    rng = np.random.default_rng(1)
    samples = []
    for i in range(n):
        c = i % 3
        s2 = rng.normal(600 + 1200 * c, 150, (12, size, size)).astype(np.uint16)
        s1 = rng.normal(-20 + 5 * c, 1, (2, size, size)).astype(np.float32)
        mask = None
        if kind == "segmentation":
            yy = np.arange(size)[:, None] * np.ones(size)
            mask = (yy >= size // 2).astype(np.uint8)
            s2[:, size // 2 :, :] = rng.normal(3500, 150, (12, size - size // 2, size)).astype(
                np.uint16
            )
            s1[:, size // 2 :, :] = -8.0
            mask[:2] = 255
        label = (
            c if kind == "classification" else ((c, (c + 1) % 3) if kind == "multilabel" else None)
        )
        split = "train" if i < n // 2 else ("val" if i < 3 * n // 4 else "test")
        samples.append(FolderSample(f"t{i}", split, {"s2_l2a": s2, "s1": s1}, label, mask))
    sensors = {"s2_l2a": {"bands": S2}, "s1": {"bands": ["VV", "VH"], "unit": "dB"}}
    return load_folder_task(
        write_folder_task(tmp_path / kind, f"toy-{kind}", kind, ["a", "b", "c"], sensors, samples)
    )


def test_knn_each_sensor_and_fused(tmp_path, tiny_model):
    task = _toy(tmp_path)
    for sensors in ("s2_l2a", "s1", "s1,s2_l2a"):
        r = evaluate(tiny_model, task, "knn", sensors, **FAST)
        assert r["primary"] == "top1" and set(r["metrics"]) == {"top1", "top1@k20", "top1@k5"}
        assert r["sensors"] == sensors.split(",") and r["n_train"] == 6 and r["n_test"] == 3
        assert r["metrics"]["top1"] == pytest.approx(100.0)  # trivially separable toy
    shots = evaluate(tiny_model, task, "knn", "s1", shots=1, **FAST)
    assert shots["n_train"] == 3 and shots["train_subset"] == "1-shot"
    frac = evaluate(tiny_model, task, "knn", "s1", label_fraction=0.01, **FAST)
    assert frac["n_train"] == 3  # at least one per class


def test_multilabel_knn_and_linear(tmp_path, tiny_model):
    task = _toy(tmp_path, "multilabel")
    r = evaluate(tiny_model, task, "knn", **FAST)
    assert r["primary"] == "micro_f1" and 0 <= r["metrics"]["micro_f1"] <= 100
    lin = evaluate(tiny_model, task, "linear", epochs=3, batch_size=4, **FAST)
    assert lin["primary"] == "micro_map" and lin["settings"]["lr"] == 1.0
    assert {"micro_map", "micro_f1", "val_micro_map"} <= set(lin["metrics"])


def test_linear_probe_learns_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 4
    y = torch.arange(200) % 4
    x = centres[y] + torch.randn(200, 16, generator=g)
    settings = ProbeSettings(epochs=10, batch_size=32, lr=0.1)
    probe = train_linear_probe(x[:150], y[:150], 4, settings)
    acc = probe_metrics(predict_linear(probe, x[150:]), y[150:], False)["top1"]
    assert acc > 95
    again = train_linear_probe(x[:150], y[:150], 4, settings)
    torch.testing.assert_close(probe.head.weight, again.head.weight)
    assert isinstance(probe.norm, torch.nn.BatchNorm1d) and probe.norm.affine is False


def test_linear_with_flip_views_and_cache(tmp_path, tiny_model):
    task = _toy(tmp_path)
    a = evaluate(tiny_model, task, "linear", "s2_l2a", epochs=4, batch_size=4, flips=True,
                 cache_dir=str(tmp_path / "c"), **FAST)  # fmt: skip
    b = evaluate(tiny_model, task, "linear", "s2_l2a", epochs=4, batch_size=4, flips=True,
                 cache_dir=str(tmp_path / "c"), **FAST)  # fmt: skip
    assert a["metrics"] == b["metrics"] and "val_top1" in a["metrics"]


def test_finetune_trains_a_copy(tmp_path, tiny_model):
    task = _toy(tmp_path, size=16)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    r = evaluate(tiny_model, task, "finetune", "s2_l2a", epochs=1, batch_size=4, lrs=[1e-4, 1e-3],
                 layer_decay=0.75, **FAST)  # fmt: skip
    assert r["lr"] in (1e-4, 1e-3) and set(r["lr_sweep"]) == {"0.0001", "0.001"}
    assert 0 <= r["metrics"]["top1"] <= 100 and "val_top1" in r["metrics"]
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_layer_decay_groups():
    import terrafm
    from terrafm.eval.finetune import Classifier, layer_decay_groups

    model = Classifier(terrafm.create_model("terrafm_tiny"), 3)
    groups = layer_decay_groups(model, 0.05, 0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.5**5, 0.5**4, 0.5**3, 0.5**2, 0.5, 1.0]  # stems, 4 blocks, head
    head = next(g for g in groups if any(p is model.head.weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and head["weight_decay"] == 0.05
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim <= 1 for p in g["params"]))


def test_segmentation_probes(tmp_path, tiny_model):
    task = _toy(tmp_path, "segmentation")
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    lin = evaluate(
        tiny_model, task, "seg-linear", "s2_l2a", epochs=30, tile=16, batch_size=8, lr=1e-2, **FAST
    )
    assert lin["primary"] == "miou" and lin["n_train"] == 6 * 4
    assert lin["metrics"]["miou"] > 60  # top / bottom halves differ strongly
    assert set(lin["metrics"]) == {"miou", "iou_a", "iou_b", "iou_c"}
    up = evaluate(
        tiny_model, task, "seg-upernet", "s1,s2_l2a", epochs=1, batch_size=3, channels=8, **FAST
    )
    assert 0 <= up["metrics"]["miou"] <= 100 and up["sensors"] == ["s1", "s2_l2a"]
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_protocol_task_mismatch_and_unknown_setting(tmp_path, tiny_model):
    task = _toy(tmp_path)
    with pytest.raises(ValueError, match="for segmentation tasks"):
        evaluate(tiny_model, task, "seg-linear")
    with pytest.raises(TypeError, match="unknown evaluation setting"):
        evaluate(tiny_model, task, "knn", epoch=3)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate(tiny_model, task, "svm")


def test_unreadable_samples_in_image_protocols(tmp_path, tiny_model):
    task = _toy(tmp_path, size=16)
    (task.root / "s2_l2a" / "t10.tif").write_bytes(b"broken")  # a test sample: always read
    r = evaluate(tiny_model, task, "finetune", "s2_l2a", epochs=1, batch_size=4, on_error="skip",
                 max_skipped=0.5, **FAST)  # fmt: skip
    assert r["skipped"] == 1
    with pytest.raises(Exception, match=r"t10\.tif"):
        evaluate(tiny_model, task, "knn", "s2_l2a", **FAST)
    r = evaluate(
        tiny_model, task, "knn", "s1", label_fraction=0.5, **FAST
    )  # other sensor unaffected
    assert r["n_train"] == 3
