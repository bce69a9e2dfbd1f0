"""Evaluation on imperfect data: samples lacking a fused sensor, and corrupt samples in the
EuroSAT, task-folder and GEO-Bench readers (one clear error, or counted skips with --skip-bad)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fake_benchmarks import GEOBENCH_S2, write_eurosat_ms, write_geobench_task, write_tif

from terrafm.cli import main
from terrafm.eval.datasets import load_task
from terrafm.eval.datasets.folder import FolderSample, write_folder_task
from terrafm.eval.features import extract_features
from terrafm.eval.tasks import SampleError
from terrafm.sensors import get_sensor

S2 = list(get_sensor("s2_l2a").band_names)


def _folder(tmp_path, n=8):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        c = i % 2
        s2 = rng.normal(800 + 1500 * c, 100, (12, 32, 32)).astype(np.uint16)
        s1 = rng.normal(-18 + 6 * c, 1, (2, 32, 32)).astype(np.float32)
        split = "train" if i < n - 2 else "test"
        samples.append(FolderSample(f"p{i}", split, {"s2_l2a": s2, "s1": s1}, c, None))
    sensors = {"s2_l2a": {"bands": S2, "unit": "DN"}, "s1": {"bands": ["VV", "VH"], "unit": "dB"}}
    return write_folder_task(
        tmp_path / "task", "toy", "classification", ["dry", "wet"], sensors, samples
    )


def _err(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_fused_dataset_embeds_what_a_sample_has(tmp_path, tiny_model):
    root = _folder(tmp_path)
    (root / "s1" / "p1.tif").unlink()  # p1 has no S1 file
    write_tif(root / "s1" / "p2.tif", np.full((2, 32, 32), np.nan, np.float32), ["VV", "VH"])
    task = load_task("folder", None, root)
    ds = task.dataset("train", ["s1", "s2_l2a"])
    assert ds[0]["masks"] == {"s1": True, "s2_l2a": True}
    for i in (1, 2):
        item = ds[i]
        assert item["masks"] == {"s1": False, "s2_l2a": True}
        assert (item["inputs"]["s1"] == 0).all() and item["inputs"]["s1"].shape == (2, 32, 32)
    feats = extract_features(tiny_model, ds, batch_size=4, progress=False)
    assert feats.ids == ["p0", "p1", "p2", "p3", "p4", "p5"] and not feats.skipped
    # Reference: the encoder on S2 alone for the samples without S1, both sensors for the rest.
    alone = task.dataset("train", ["s2_l2a"])
    with torch.inference_mode():
        ref1 = tiny_model({"s2_l2a": alone[1]["inputs"]["s2_l2a"][None]})[0]
        both = {s: x[None] for s, x in ds[0]["inputs"].items()}
        ref0 = tiny_model(both)[0]
    torch.testing.assert_close(feats.cls[0, 1], ref1, atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.cls[0, 0], ref0, atol=1e-4, rtol=0)

    strict = task.dataset("train", ["s1", "s2_l2a"], missing_sensor="error")
    with pytest.raises(SampleError, match=r"toy: sample p1 \(p1\) has no s1 image"):
        strict[1]
    with pytest.raises(SampleError, match=r"sample p2 \(p2\) has no finite value in its s1 image"):
        task.dataset("train", ["s1"])[2]


def test_cli_fused_knn_with_a_missing_sensor(tmp_path, capsys):
    root = _folder(tmp_path)
    (root / "s1" / "p3.tif").unlink()
    args = ["eval", "--benchmark", "folder", "--data-root", str(root), "--protocol", "knn"]
    args += ["--model", "terrafm_tiny", "--sensors", "s1,s2_l2a", "--no-progress", "--no-cache"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "result.json").read_text())["results"][0]["n_train"] == 6
    rc = main([*args, "--out", str(tmp_path / "b"), "--missing-sensor", "error"])
    assert rc == 1
    assert _err(capsys) == ["terrafm eval: error: folder/toy: sample p3 (p3) has no s1 image"]


def _corrupt(path):
    path.write_bytes(path.read_bytes()[:200])  # truncated


@pytest.mark.parametrize("reader", ["eurosat", "folder", "geobench"])
def test_corrupt_sample_one_error_or_counted_skip(tmp_path, capsys, reader):
    if reader == "eurosat":
        root = write_eurosat_ms(tmp_path / "eurosat", per_class=6, size=32)
        bad = root / "Forest" / "Forest_2.tif"
        args = ["--benchmark", "eurosat"]
    elif reader == "folder":
        root = _folder(tmp_path, n=12)
        bad = root / "s2_l2a" / "p4.tif"
        args = ["--benchmark", "folder", "--sensors", "s2_l2a"]
    else:
        root = tmp_path / "gb"
        d = write_geobench_task(root, "m-eurosat", GEOBENCH_S2, 10, counts=(8, 4, 4))
        bad = d / "id_train_0003.hdf5"
        args = ["--benchmark", "geobench", "--task", "m-eurosat", "--partition", "default"]
    _corrupt(bad)
    args = ["eval", *args, "--data-root", str(root), "--protocol", "knn", "--model", "terrafm_tiny"]
    args += ["--no-progress", "--no-cache"]
    # Without --skip-bad: one line naming the file, exit 1.
    assert main([*args, "--out", str(tmp_path / "strict")]) == 1
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith("terrafm eval: error: ") and bad.name in err[0], err
    assert "Traceback" not in err[0]
    # --skip-bad: counted and named, under the allowed fraction.
    more = ["--skip-bad", "--max-skipped", "0.5", "--out", str(tmp_path / "skip")]
    assert main([*args, *more]) == 0
    res = json.loads((tmp_path / "skip" / "result.json").read_text())["results"][0]
    assert res["skipped"] == 1, res
    # --skip-bad with the default 1 %: one clear error that counts and names it.
    assert main([*args, "--skip-bad", "--out", str(tmp_path / "few")]) == 1
    err = _err(capsys)
    assert err[-1].startswith("terrafm eval: error: 1 of ") and bad.name in err[-1], err
