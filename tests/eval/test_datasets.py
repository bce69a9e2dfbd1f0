"""Every reader on small files in the exact published layout, and the contract-D samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_benchmarks import (
    EUROSAT_ORDER,
    GEOBENCH_S1,
    GEOBENCH_S2,
    band_value,
    write_bigearthnet,
    write_cloud_s2,
    write_dfc2020,
    write_eurosat_cob,
    write_eurosat_ms,
    write_geobench_task,
    write_landslide4sense,
    write_lcz,
    write_tif,
)

from terrafm.eval.datasets import load_task
from terrafm.eval.datasets.folder import FolderSample, write_folder_task
from terrafm.eval.tasks import SampleError
from terrafm.sensors import BandError, get_sensor

STEM = list(get_sensor("s2_l1c").band_names)


def _stem_values(task, split="train", i=0, sensor="s2_l1c"):
    """Per stem band, the mean raw value of sample ``i`` after mapping (before z-scoring)."""
    ref = task.splits[split][i]
    raw = task.load(ref)
    x = task.stem_units(sensor, raw.images[sensor], ref)
    return x.reshape(x.shape[0], -1).mean(1), raw


def _check_item(item, sensors, size, kind, k):
    assert set(item["inputs"]) == set(sensors)
    for s, x in item["inputs"].items():
        assert x.dtype == torch.float32 and x.shape == (get_sensor(s).num_bands, size, size)
        assert torch.isfinite(x).all()
    if kind == "classification":
        assert item["label"].dtype == torch.long and item["label"].ndim == 0
    elif kind == "multilabel":
        assert item["label"].shape == (k,) and set(item["label"].unique().tolist()) <= {0.0, 1.0}
    else:
        assert item["mask"].dtype == torch.long and item["mask"].shape == (size, size)
    assert isinstance(item["id"], str)


# ------------------------------------------------------------------ GEO-Bench
def test_geobench_eurosat_errata_partitions_and_labels(tmp_path):
    write_geobench_task(tmp_path, "m-eurosat", GEOBENCH_S2, 10)
    task = load_task("geobench", "m-eurosat", tmp_path)
    assert task.kind == "classification" and task.num_classes == 10 and task.image_size == 64
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 8, "val": 4, "test": 4}
    assert task.partitions["0.01x_train"]["train"] == ["id_train_0000", "id_train_0001"]
    vals, raw = _stem_values(task, i=3)
    label = raw.label
    assert label == 3
    # stored under "12 - SWIR" (13th) is really B8A; under "08A ..." (9th) is B09; "11 - SWIR" is B12
    assert vals[STEM.index("B8A")] == pytest.approx(band_value(12, label), abs=1)
    assert vals[STEM.index("B09")] == pytest.approx(band_value(8, label), abs=1)
    assert vals[STEM.index("B11")] == pytest.approx(band_value(9 + 1, label), abs=1)
    assert vals[STEM.index("B12")] == pytest.approx(band_value(11, label), abs=1)
    _check_item(task.dataset("val")[1], ["s2_l1c"], 64, "classification", 10)
    assert len(task.dataset("train", partition="0.01x_train")) == 2


def test_geobench_brick_kiln_errata_ignores_rgb_and_imputes(tmp_path):
    write_geobench_task(tmp_path, "m-brick-kiln", GEOBENCH_S2, 2)
    task = load_task("geobench", "m-brick-kiln", tmp_path)
    plan = task.plan("s2_l1c")
    assert plan.imputed == {"B06": "B05", "B09": "B8A"} and plan.ignored == (
        "TCI_R",
        "TCI_G",
        "TCI_B",
    )
    vals, raw = _stem_values(task, i=1)
    assert vals[STEM.index("B8A")] == pytest.approx(band_value(6, raw.label), abs=1)  # "07 - ..."
    assert vals[STEM.index("B11")] == pytest.approx(band_value(8, raw.label), abs=1)  # "08A - ..."
    assert vals[STEM.index("B08")] == pytest.approx(band_value(7, raw.label), abs=1)


def test_geobench_so2sat_reflectance_and_ignored_s1(tmp_path):
    s2 = [n for n in GEOBENCH_S2 if n.split(" ")[0] not in ("01", "09", "10")]
    write_geobench_task(
        tmp_path, "m-so2sat", list(GEOBENCH_S1) + s2, 17, scale=1e-4, dtype=np.float32
    )
    task = load_task("geobench", "m-so2sat", tmp_path)
    assert task.plan("s2_l1c").imputed == {"B01": "B02", "B09": "B8A"}
    assert len(task.plan("s2_l1c").ignored) == 8  # the complex S1 channels
    vals, raw = _stem_values(task, i=2)
    # reflectance x 1e4 back to DN; B02 is the 10th stored channel (after the 8 S1 ones and...)
    assert vals[STEM.index("B02")] == pytest.approx(band_value(8, raw.label), rel=1e-3)
    assert vals[STEM.index("B01")] == pytest.approx(vals[STEM.index("B02")])
    _check_item(task.dataset("train")[0], ["s2_l1c"], 32, "classification", 17)


def test_geobench_bigearthnet_multilabel_and_segmentation(tmp_path):
    s2_12 = [n for n in GEOBENCH_S2 if not n.startswith("10")]
    write_geobench_task(tmp_path, "m-bigearthnet", s2_12, 43, kind="multilabel")
    task = load_task("geobench", "m-bigearthnet", tmp_path, image_size=32)
    item = task.dataset("train")[5]
    _check_item(item, ["s2_l2a"], 32, "multilabel", 43)
    assert item["label"].nonzero().flatten().tolist() == [5, 6]
    write_geobench_task(
        tmp_path, "m-SA-crop-type", s2_12, 10, kind="segmentation", benchmark="segmentation_v1.0"
    )
    seg = load_task("geobench", "m-sa-crop-type", tmp_path, image_size=32)
    assert seg.kind == "segmentation" and seg.root.name == "m-SA-crop-type"
    item = seg.dataset("test")[0]
    _check_item(item, ["s2_l2a"], 32, "segmentation", 10)
    assert int(item["mask"].max()) < 10


def test_geobench_missing_task_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown GEO-Bench task"):
        load_task("geobench", "m-nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="m-eurosat"):
        load_task("geobench", "m-eurosat", tmp_path)


# ------------------------------------------------------------------ Copernicus-Bench
def test_copernicus_cloud_and_dfc(tmp_path):
    write_cloud_s2(tmp_path)
    write_dfc2020(tmp_path)
    cloud = load_task("copernicus", "cloud_s2", tmp_path, image_size=32)
    assert cloud.classes[3] == "cloud shadow" and len(cloud.splits["train"]) == 4
    _check_item(cloud.dataset("train")[0], ["s2_l1c"], 32, "segmentation", 4)
    dfc = load_task("copernicus", "dfc2020_s1s2", tmp_path, image_size=32)
    assert dfc.num_classes == 8 and dfc.default_sensors == ("s1", "s2_l1c")
    ref = dfc.splits["train"][0]
    raw_label = __import__("rasterio").open(dfc.root / "dfc" / ref.key).read(1)
    got = dfc.load(ref).mask
    expect = {0: 255, 1: 0, 2: 1, 3: 255, 4: 2, 5: 3, 6: 4, 7: 5, 8: 255, 9: 6, 10: 7}
    assert all(int(got[raw_label == a].max(initial=b)) == b for a, b in expect.items())
    item = dfc.dataset("train", "s1,s2_l1c")[0]  # fused
    _check_item(item, ["s1", "s2_l1c"], 32, "segmentation", 8)
    assert load_task("copernicus", "dfc2020_s1", tmp_path).default_sensors == ("s1",)


def test_copernicus_eurosat_s1_s2(tmp_path):
    write_eurosat_cob(tmp_path, "s1")
    write_eurosat_cob(tmp_path, "s2")
    s1 = load_task("copernicus", "eurosat_s1", tmp_path, image_size=32)
    assert s1.classes == ["AnnualCrop", "Forest", "River"]
    assert [r.label for r in s1.splits["train"]] == [0, 0, 1, 1, 2, 2]
    _check_item(s1.dataset("test")[2], ["s1"], 32, "classification", 3)
    s2 = load_task("copernicus", "eurosat_s2", tmp_path, image_size=32)
    vals, _ = _stem_values(s2, i=0)
    assert vals[STEM.index("B8A")] == pytest.approx(
        band_value(EUROSAT_ORDER.index("B8A"), 0), abs=1
    )
    assert s2.image_size == 32 and load_task("copernicus", "eurosat_s2", tmp_path).image_size == 224


def test_copernicus_bigearthnet_fused_and_lcz(tmp_path):
    write_bigearthnet(tmp_path)
    write_lcz(tmp_path)
    ben = load_task("copernicus", "bigearthnet", tmp_path, image_size=32)
    assert ben.num_classes == 19 and ben.kind == "multilabel"
    item = ben.dataset("train", ["s1", "s2_l2a"])[1]
    _check_item(item, ["s1", "s2_l2a"], 32, "multilabel", 19)
    assert item["label"].nonzero().flatten().tolist() == [1, 6]
    assert ben.stats_for("s1", "benchmark").mean == (-12.548, -20.192)
    lcz = load_task("copernicus", "lcz", tmp_path)
    assert lcz.image_size == 112 and lcz.num_classes == 17
    vals, raw = _stem_values(lcz, split="test", i=2)
    assert raw.label == 2 and vals[STEM.index("B02")] == pytest.approx(band_value(0, 2), rel=1e-3)
    _check_item(lcz.dataset("test", image_size=32)[2], ["s2_l1c"], 32, "classification", 17)


# ------------------------------------------------------------------ Landslide4Sense
@pytest.mark.parametrize("layout", ["competition", "hf"])
def test_landslide4sense_layouts(tmp_path, layout):
    write_landslide4sense(tmp_path, layout)
    task = load_task("landslide4sense", None, tmp_path, image_size=32)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert task.normalization == "dataset" and task.plan("s2_l1c").imputed == {"B8A": "B08"}
    item = task.dataset("val")[1]
    _check_item(item, ["s2_l1c"], 32, "segmentation", 2)
    assert set(item["mask"].unique().tolist()) <= {0, 1}
    with pytest.raises(BandError, match="normalization='dataset'"):
        task.dataset("val", normalization="model")
    stats = task.stats_for("s2_l1c", "dataset")
    assert stats.mean[0] == pytest.approx(0.5, abs=0.02) and stats.std[0] == pytest.approx(
        0.3, abs=0.02
    )


# ------------------------------------------------------------------ EuroSAT-MS and folders
def test_eurosat_ms_stratified_and_split_files(tmp_path):
    write_eurosat_ms(tmp_path / "a")
    task = load_task("eurosat", None, tmp_path / "a", train_per_class=2, seed=1)
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [6, 6, 6]
    again = load_task("eurosat", None, tmp_path / "a", train_per_class=2, seed=1)
    assert [r.id for r in task.splits["train"]] == [r.id for r in again.splits["train"]]
    vals, raw = _stem_values(task)
    assert vals[STEM.index("B8A")] == pytest.approx(band_value(12, raw.label), abs=1)
    (tmp_path / "a" / "eurosat-train.txt").write_text("Forest_1.jpg\nSeaLake_2.jpg\n")
    (tmp_path / "a" / "eurosat-val.txt").write_text("Forest_2.jpg\n")
    (tmp_path / "a" / "eurosat-test.txt").write_text("AnnualCrop_3.jpg\n")
    listed = load_task("eurosat", None, tmp_path / "a")
    assert [(r.id, r.label) for r in listed.splits["train"]] == [("Forest_1", 1), ("SeaLake_2", 2)]


def _folder(tmp_path, kind="classification", size=32):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(6):
        split = "train" if i < 4 else "test"
        s2 = (rng.normal(1500, 300, (12, size, size))).astype(np.uint16)
        s1 = rng.normal(-15, 3, (2, size, size)).astype(np.float32)
        label = (
            (i % 3)
            if kind == "classification"
            else ((i % 3, (i + 1) % 3) if kind == "multilabel" else None)
        )
        mask = rng.integers(0, 3, (size, size)).astype(np.uint8) if kind == "segmentation" else None
        samples.append(FolderSample(f"s{i}", split, {"s2_l2a": s2, "s1": s1}, label, mask))
    sensors = {"s2_l2a": {"bands": STEM, "unit": "DN"}, "s1": {"bands": ["VV", "VH"], "unit": "dB"}}
    return write_folder_task(
        tmp_path / kind, f"toy-{kind}", kind, ["a", "b", "c"], sensors, samples
    )


@pytest.mark.parametrize("kind", ["classification", "multilabel", "segmentation"])
def test_folder_task_contract_c(tmp_path, kind):
    root = _folder(tmp_path, kind)
    assert (root / "task.json").is_file() and (root / "samples.csv").is_file()
    assert (root / "s2_l2a" / "s0.tif").is_file() and (root / "s1" / "s5.tif").is_file()
    assert (root / "masks" / "s0.tif").is_file() == (kind == "segmentation")
    task = load_task("folder", None, root)
    assert task.image_size == 32 and {k: len(v) for k, v in task.splits.items()} == {
        "train": 4,
        "test": 2,
    }
    for sensors in (["s1"], ["s2_l2a"], ["s1", "s2_l2a"]):
        _check_item(task.dataset("train", sensors)[1], sensors, 32, kind, 3)


def test_folder_errors_name_the_file(tmp_path):
    root = _folder(tmp_path)
    write_tif(root / "s1" / "s2.tif", np.zeros((2, 32, 32), np.float32), ["VH", "VV"])
    task = load_task("folder", None, root)
    with pytest.raises(SampleError, match=r"s1/s2\.tif: band descriptions"):
        task.dataset("train", "s1")[2]
    (root / "s1" / "s3.tif").unlink()
    ds = task.dataset("train", "s1", on_error="skip")
    assert "s3.tif: file not found" in ds[3]["error"]
    (root / "samples.csv").write_text("sample_id,split,label\ns0,train,7\n")
    with pytest.raises(
        ValueError, match=r"samples.csv:2 \(sample s0\): class index 7 out of range"
    ):
        load_task("folder", None, root)
    with pytest.raises(BandError, match="available sensors"):
        task.dataset("train", "s2_l1c")


def test_sizes_are_multiples_of_16(tmp_path):
    root = _folder(tmp_path, size=40)
    task = load_task("folder", None, root)
    assert task.dataset("train")[0]["inputs"]["s1"].shape[-1] == 48  # 40 rounded to 48
    with pytest.raises(ValueError, match="multiple of 16"):
        task.dataset("train", image_size=40)
