"""``terrafm embed`` and ``terrafm serve-export`` through the real CLI; scene lists and ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window as RioWindow

from terrafm.checkpoint import save_weights
from terrafm.cli import main
from terrafm.embed.scenes import SceneListError, read_scene_list, shard


@pytest.fixture(scope="module")
def ckpt(tiny, tmp_path_factory):
    return save_weights(tiny, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", "terrafm_tiny")


@pytest.fixture(scope="module")
def crops(floods, tmp_path_factory):
    """Three 128 x 128 scenes cut from the real chip: S1 and S2 L1C each."""
    d = tmp_path_factory.mktemp("crops")
    scenes = []
    for i, (r, c) in enumerate([(0, 0), (128, 256), (384, 384)]):
        paths = {}
        for key, src_path in floods.items():
            with rasterio.open(src_path) as src:
                t = src.transform @ rasterio.Affine.translation(c, r)
                profile = {**src.profile, "width": 128, "height": 128, "transform": t}
                data = src.read(window=RioWindow(c, r, 128, 128))
                names = src.descriptions
            paths[key] = d / f"scene{i}_{key}.tif"
            with rasterio.open(paths[key], "w", **profile) as dst:
                dst.write(data)
                dst.descriptions = names
        scenes.append(paths)
    return scenes


def test_cli_embed_one_fused_scene(ckpt, crops, tmp_path, capsys):
    scene = crops[1]
    args = ["embed", "--input", f"s2_l1c={scene['s2_l1c']}", "--input", f"s1={scene['s1']}"]
    args += ["--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif")]
    args += ["--table", str(tmp_path / "o.parquet"), "--preview", str(tmp_path / "o.png")]
    args += ["--window", "64", "--overlap", "32", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "done; 9 windows (9 computed" in out
    with rasterio.open(tmp_path / "o.tif") as o, rasterio.open(scene["s1"]) as s:
        assert (o.count, o.height, o.width) == (96, 8, 8) and o.crs == s.crs
    assert (tmp_path / "o.parquet").exists() and (tmp_path / "o.png").exists()
    assert (
        main(args) == 0 and "up-to-date" in capsys.readouterr().out
    )  # same weights: nothing to do


def test_cli_reports_bad_input_clearly(ckpt, floods, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"garbage")
    rc = main(
        [
            "embed",
            "--input",
            f"s1={bad}",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "o.tif"),
        ]
    )
    assert rc == 1 and "broken.tif: cannot open as a raster" in capsys.readouterr().err
    rc = main(
        [
            "embed",
            "--input",
            f"s1={floods['s1']}",
            "--model",
            "terrafm_tiny",
            "--out",
            str(tmp_path / "p.tif"),
            "--window",
            "200",
        ]
    )
    assert rc == 1 and "multiple of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="SENSOR=VALUE"):
        main(
            ["embed", "--input", f"s3={floods['s1']}", "--model", "terrafm_tiny", "--out", "x.tif"]
        )


def _scene_list(crops, tmp_path, bad_row=False) -> Path:
    lines = ["out,table,s1,s2_l1c"]
    for i, p in enumerate(crops):
        lines.append(f"out/scene{i}.tif,out/scene{i}.parquet,{p['s1']},{p['s2_l1c']}")
    if bad_row:
        lines.append(f"out/bad.tif,,{tmp_path / 'missing.tif'},")
    path = tmp_path / "scenes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scene_list_is_sharded_across_ranks(ckpt, crops, tmp_path, capsys):
    lst = _scene_list(crops, tmp_path, bad_row=True)
    jobs = read_scene_list(lst)
    assert [j.out.name for j in jobs] == ["scene0.tif", "scene1.tif", "scene2.tif", "bad.tif"]
    assert [j.out.name for j in shard(jobs, 1, 2)] == ["scene1.tif", "bad.tif"]
    base = [
        "embed",
        "--scene-list",
        str(lst),
        "--checkpoint",
        str(ckpt),
        "--no-progress",
        "--window",
        "64",
    ]
    assert main([*base, "--rank", "0", "--world-size", "2"]) == 0
    assert {p.name for p in (tmp_path / "out").glob("*.tif")} == {"scene0.tif", "scene2.tif"}
    assert main([*base, "--rank", "1", "--world-size", "2"]) == 1  # bad.tif fails, scene1 is done
    captured = capsys.readouterr()
    assert "missing.tif" in captured.err and "1 scene(s) done, 1 failed" in captured.out
    for i, p in enumerate(crops):
        with rasterio.open(tmp_path / "out" / f"scene{i}.tif") as o, rasterio.open(p["s1"]) as s:
            assert o.transform == s.transform @ rasterio.Affine.scale(16) and o.shape == (8, 8)


def test_scene_list_errors(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("out,s4\nx.tif,y.tif\n")
    with pytest.raises(SceneListError, match=r"l\.csv: columns"):
        read_scene_list(p)
    p.write_text("out,s1\nx.tif,\n")
    with pytest.raises(SceneListError, match=r"l\.csv, line 2"):
        read_scene_list(p)


def test_cli_serve_export(ckpt, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    rc = main(
        [
            "serve-export",
            "--checkpoint",
            str(ckpt),
            "--sensors",
            "s2_l1c,s1",
            "--out",
            str(out),
            "--size",
            "32",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "torch-export" in printed and ": ok" in printed and out.exists()
    with pytest.raises(SystemExit, match="--format"):
        main(
            [
                "serve-export",
                "--checkpoint",
                str(ckpt),
                "--sensors",
                "s1",
                "--out",
                str(tmp_path / "m.bin"),
            ]
        )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "terrafm.cli", *args]


@pytest.mark.dist
def test_torchrun_shards_scenes_over_two_ranks(ckpt, crops, tmp_path):
    lst = _scene_list(crops, tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "terrafm.cli",
        "embed",
        "--scene-list",
        str(lst),
    ]
    cmd += ["--checkpoint", str(ckpt), "--no-progress", "--window", "64", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("scene(s) done, 0 failed") == 2
    assert "rank 0/2: 2 scene(s)" in res.stdout and "rank 1/2: 1 scene(s)" in res.stdout
    assert all((tmp_path / "out" / f"scene{i}.parquet").exists() for i in range(3))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output(ckpt, floods, tmp_path):
    """SIGKILL in the middle of a run (no clean shutdown), then the same command again."""
    args = ["embed", "--input", f"s2_l1c={floods['s2_l1c']}", "--input", f"s1={floods['s1']}"]
    args += ["--checkpoint", str(ckpt), "--window", "64", "--batch-size", "4", "--no-progress"]
    args += ["--checkpoint-seconds", "0.2", "--readers", "1"]
    ref = subprocess.run(
        _cli(*args, "--out", str(tmp_path / "ref.tif")), capture_output=True, text=True
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "run.tif"
    proc = subprocess.Popen(
        _cli(*args, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    progress = Path(str(out) + ".progress.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and len(json.loads(progress.read_text())["done"]) >= 12:
            break  # some windows are recorded, most are not
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = subprocess.run(_cli(*args, "--out", str(out)), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert " resumed" in res.stdout and "0 resumed" not in res.stdout
    with rasterio.open(out) as a, rasterio.open(tmp_path / "ref.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
