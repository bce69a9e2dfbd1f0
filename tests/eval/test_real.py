"""The real samples in ../shared/data/real through the EuroSAT-MS and folder formats."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from terrafm.eval import evaluate, load_task
from terrafm.eval.datasets.scene import SceneRaster, scene_to_folder
from terrafm.sensors import get_sensor

STEM = list(get_sensor("s2_l1c").band_names)


def test_real_eurosat_maps_b8a_last_by_name(real_data):
    task = load_task("eurosat", None, real_data / "eurosat-ms-geotorchai", train_per_class=5)
    assert task.classes[0] == "AnnualCrop" and task.classes[-1] == "SeaLake"
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [50, 80, 70]
    ref = task.splits["train"][0]
    with rasterio.open(ref.key) as src:
        raw = src.read().astype(np.float32)
    x = task.stem_units("s2_l1c", raw, ref)
    np.testing.assert_array_equal(x[STEM.index("B8A")], raw[12])  # file band 13 is B8A
    np.testing.assert_array_equal(x[STEM.index("B09")], raw[8])
    np.testing.assert_array_equal(x[STEM.index("B11")], raw[10])  # B10 (file band 10) dropped


def test_real_sen1floods11_as_a_fused_segmentation_task(real_data, tmp_path, tiny_model):
    d = real_data / "sen1floods11-sample"
    with rasterio.open(d / "S2" / "Spain_7370579_S2Hand.tif") as s:
        s2, s2_bands = s.read(), [b for b in s.descriptions]
    with rasterio.open(d / "S1" / "Spain_7370579_S1Hand.tif") as s:
        s1 = s.read()
    with rasterio.open(d / "Labels" / "Spain_7370579_LabelHand.tif") as s:
        label = s.read(1)
    root = scene_to_folder(
        tmp_path / "floods", "sen1floods11", {"s2_l1c": SceneRaster(s2, s2_bands, "DN"),
                                             "s1": SceneRaster(s1, ["VV", "VH"], "dB")},
        label, {0: "dry", 1: "water"}, tile=128,
    )  # fmt: skip
    task = load_task("folder", None, root)
    assert (
        task.kind == "segmentation"
        and len(task.splits["train"]) == 8
        and len(task.splits["test"]) == 8
    )
    item = task.dataset("test", "s1,s2_l1c")[0]
    assert item["inputs"]["s1"].shape == (2, 128, 128) and item["inputs"]["s2_l1c"].shape == (
        12,
        128,
        128,
    )
    water = (label == 1).mean()
    masks = np.concatenate(
        [task.load(r).mask.ravel() for r in task.splits["train"] + task.splits["test"]]
    )
    assert (masks == 1).mean() == pytest.approx(water, abs=0.05)
    r = evaluate(tiny_model, task, "seg-linear", "s1", epochs=5, lr=1e-2, progress=False)
    assert 0 <= r["metrics"]["iou_water"] <= 100
