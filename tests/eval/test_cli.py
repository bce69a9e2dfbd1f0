"""``terrafm eval`` through the real CLI with terrafm_tiny on tiny generated tasks."""

from __future__ import annotations

import json

import numpy as np

from terrafm.cli import main
from terrafm.eval.datasets.folder import FolderSample, write_folder_task
from terrafm.sensors import get_sensor

S2 = list(get_sensor("s2_l2a").band_names)


def _folder(tmp_path, kind="classification"):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(8):
        c = i % 2
        s2 = rng.normal(800 + 1500 * c, 100, (12, 32, 32)).astype(np.uint16)
        s1 = rng.normal(-18 + 6 * c, 1, (2, 32, 32)).astype(np.float32)
        mask = np.full((32, 32), c, np.uint8) if kind == "segmentation" else None
        samples.append(FolderSample(f"p{i}", "train" if i < 6 else "test", {"s2_l2a": s2, "s1": s1},
                                    c if kind == "classification" else None, mask))  # fmt: skip
    sensors = {"s2_l2a": {"bands": S2, "unit": "DN"}, "s1": {"bands": ["VV", "VH"], "unit": "dB"}}
    return write_folder_task(tmp_path / kind, "toy", kind, ["dry", "wet"], sensors, samples)


def test_cli_knn_each_sensor_and_fused(tmp_path, capsys):
    root = _folder(tmp_path)
    out = tmp_path / "run"
    rc = main(["eval", "--benchmark", "folder", "--data-root", str(root), "--protocol", "knn",
               "--model", "terrafm_tiny", "--sensors", "s1", "s2_l2a", "s1,s2_l2a", "--out", str(out),
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "result.json").read_text())
    assert [r["sensors"] for r in record["results"]] == [["s1"], ["s2_l2a"], ["s1", "s2_l2a"]]
    assert all(r["metrics"]["top1"] == 100.0 for r in record["results"])
    assert "random initialisation" in record["model"]["weights"]
    report = (out / "report.md").read_text()
    assert "| folder/toy | knn | s1+s2_l2a | default | top1 | **100.0** | — |" in report
    assert list((out / "features").glob("*.safetensors"))  # cached by default
    assert "folder/toy knn [s1+s2_l2a] top1 = 100.00" in capsys.readouterr().out


def test_cli_segmentation_with_checkpoint(tmp_path):
    import terrafm
    from terrafm.checkpoint import save_weights

    ckpt = save_weights(
        terrafm.create_model("terrafm_tiny"), tmp_path / "tiny.safetensors", "terrafm_tiny"
    )
    root = _folder(tmp_path, "segmentation")
    out = tmp_path / "seg"
    rc = main(["eval", "--benchmark", "folder", "--data-root", str(root), "--protocol", "seg-linear",
               "--checkpoint", str(ckpt), "--epochs", "2", "--tile", "16", "--out", str(out),
               "--no-progress", "--no-cache", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "result.json").read_text())
    assert record["model"] == {"name": "terrafm_tiny", "weights": str(ckpt)}
    assert set(record["results"][0]["metrics"]) == {"miou", "iou_dry", "iou_wet"}
    assert not (out / "features").exists()


def test_cli_suite_records_missing_data_as_failures(tmp_path):
    out = tmp_path / "suite"
    rc = main(["eval", "--suite", "landslide4sense", "--data-root", str(tmp_path), "--model", "terrafm_tiny",
               "--out", str(out), "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 1
    record = json.loads((out / "result.json").read_text())
    assert "no Landslide4Sense data" in record["results"][0]["error"]
    report = (out / "report.md").read_text()
    assert (
        "failed: FileNotFoundError" in report
        and "TerraFM-B" not in report.split("## All")[0].split("failed")[0]
    )


def test_cli_suite_landslide4sense_beside_published(tmp_path):
    from fake_benchmarks import write_landslide4sense

    write_landslide4sense(tmp_path / "l4s", counts=(4, 1, 2), size=16)
    out = tmp_path / "suite"
    rc = main(["eval", "--suite", "landslide4sense", "--data-root", str(tmp_path / "l4s"), "--model", "terrafm_tiny",
               "--epochs", "1", "--batch-size", "2", "--channels", "8", "--image-size", "32", "--out", str(out),
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    record = json.loads((out / "result.json").read_text())
    r = record["results"][0]
    assert r["protocol"] == "seg-upernet" and r["settings"]["normalization"] == "dataset"
    assert {"miou", "iou_landslide", "iou_non_landslide"} <= set(r["metrics"])
    report = (out / "report.md").read_text()
    assert "TerraFM-B 70.8 · Prithvi-EO-2.0 300M 65.0" in report and "TerraFM-B 43.1" in report


def test_suite_rows_yield_to_the_callers_settings():
    from terrafm.eval.runner import EvalSettings
    from terrafm.eval.suite import SUITES, _row_overrides

    row = SUITES["geobench-finetune"][0]
    assert "lrs" in _row_overrides(row, EvalSettings())
    assert _row_overrides(row, EvalSettings(lr=1e-3)) == {}
    cop = SUITES["copernicus"][1]
    assert _row_overrides(cop, EvalSettings()) == {"flips": True}


def _knn(root, out, *more):
    return ["eval", "--benchmark", "folder", "--data-root", str(root), "--protocol", "knn",
            "--model", "terrafm_tiny", "--sensors", "s2_l2a", "--out", str(out), "--no-progress",
            "--no-cache", "--device", "cpu", *more]  # fmt: skip


def _err_lines(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_cli_existing_report_is_refused_unless_overwrite(tmp_path, capsys):
    root = _folder(tmp_path)
    out = tmp_path / "run"
    assert main(_knn(root, out)) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(_knn(root, out)) == 1
    assert _err_lines(capsys) == [
        f"terrafm eval: error: --out {out / 'result.json'} already exists; "
        "pass --overwrite to replace it"
    ]
    assert _snapshot(out) == before
    assert main(_knn(root, out, "--overwrite")) == 0
    after = _snapshot(out)
    assert after["result.json"][1] != before["result.json"][1]
    assert after["report.md"][1] != before["report.md"][1]
    # A report.md alone (another tool's, or a run killed between the two files) is kept too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.md").write_text("mine")
    assert main(_knn(root, other)) == 1
    assert _err_lines(capsys)[-1].endswith(
        f"--out {other / 'report.md'} already exists; pass --overwrite to replace it"
    )
    assert _snapshot(other) == {"report.md": (b"mine", (other / "report.md").stat().st_mtime_ns)}


def test_cli_unwritable_out_fails_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    import errno
    import os
    from pathlib import Path

    import terrafm.commands.eval as cmd
    import terrafm.outputs

    ro = tmp_path / "ro"
    ro.mkdir()
    real = terrafm.outputs._probe

    def probe(target):
        if Path(target).resolve().is_relative_to(ro.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
        real(target)

    def no_model(args):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(terrafm.outputs, "_probe", probe)
    monkeypatch.setattr(cmd, "_model", no_model)
    assert main(_knn(_folder(tmp_path), ro)) == 1
    assert _err_lines(capsys) == [
        f"terrafm eval: error: cannot write --out {ro}: read-only file system"
    ]
    assert list(ro.iterdir()) == []
