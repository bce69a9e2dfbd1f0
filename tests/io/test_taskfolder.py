"""The one task-folder writer (terrafm.io.taskfolder), read back by the evaluation's folder reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terrafm.eval.datasets.folder import load_folder_task
from terrafm.io.taskfolder import FolderTaskError, TaskFolderWriter

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

S1 = {"s1": {"bands": ["VV", "VH"], "unit": "dB"}}


def test_streamed_segmentation_folder_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = TaskFolderWriter(
        tmp_path / "seg", "toy", "segmentation", ["water", "land"], S1, 255,
        nodata={"s1": -9999.0}, extra={"description": "two chips"},
    )  # fmt: skip
    chips = {}
    for i, split in enumerate(("train", "test")):
        img = rng.normal(-12, 3, (2, 32, 32)).astype(np.float32)
        mask = rng.integers(0, 2, (32, 32)).astype(np.uint8)
        mask[:4] = 255
        chips[f"c{i}"] = (img, mask)
        w.add(f"c{i}", split, {"s1": img}, mask=mask)
    with pytest.raises(FolderTaskError, match="sample c9: a segmentation task needs a mask"):
        w.add("c9", "train", {"s1": img})
    root = w.finish()
    meta = json.loads((root / "task.json").read_text())
    assert meta["description"] == "two chips" and meta["sensors"]["s1"]["unit"] == "dB"
    with rasterio.open(root / "s1" / "c0.tif") as f:
        assert f.nodata == -9999.0 and f.descriptions == ("VV", "VH")
    with rasterio.open(root / "masks" / "c0.tif") as f:
        assert f.nodata == 255 and f.dtypes[0] == "uint8"
    task = load_folder_task(root)
    assert [r.key for r in task.splits["train"]] == ["c0"] and task.kind == "segmentation"
    for split in ("train", "test"):
        (ref,) = task.splits[split]
        sample = task.load(ref)
        np.testing.assert_array_equal(sample.images["s1"], chips[ref.key][0])
        np.testing.assert_array_equal(sample.mask, chips[ref.key][1])


def test_multilabel_rows(tmp_path: Path) -> None:
    w = TaskFolderWriter(tmp_path / "ml", "ml", "multilabel", ["a", "b", "c"], S1)
    img = np.zeros((2, 16, 16), np.float32)
    w.add("x", "train", {"s1": img}, label=[0, 2])
    w.add("y", "test", {"s1": img}, label=[1])
    root = w.finish()
    assert (root / "samples.csv").read_text().splitlines() == [
        "sample_id,split,label",
        "x,train,0;2",
        "y,test,1",
    ]
    task = load_folder_task(root)
    assert len(task.splits["train"]) == 1 and len(task.splits["test"]) == 1
