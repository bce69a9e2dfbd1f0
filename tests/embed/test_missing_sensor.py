"""embed with a fused sensor missing: fuse-available embeds from the sensors valid there, nodata
writes nodata (and says so); the table records the sensors of each window."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import rasterio
from embed_fixtures import copy_raster, direct_embedding, owned, read_window

from terrafm.cli import main
from terrafm.embed import EmbedOptions, SourceSpec, WindowGrid, embed_scene
from terrafm.sensors import normalize

OPTS = dict(progress=False, batch_size=4, readers=2, window=64)


def _crop(src, dst, edit=None):
    """The top-left 128 x 128 of a raster (same transform), optionally edited."""
    return copy_raster(src, dst, lambda d: (edit or (lambda x: x))(d[:, :128, :128].copy()))


def _nan_s1(d):
    d[:] = np.nan
    return d


def test_s1_all_nan_beside_valid_s2(tiny, floods, tmp_path, caplog):
    s1 = _crop(floods["s1"], tmp_path / "s1.tif", _nan_s1)
    s2 = _crop(floods["s2_l1c"], tmp_path / "s2.tif")
    specs = [SourceSpec("s2_l1c", str(s2)), SourceSpec("s1", str(s1))]
    rep = embed_scene(
        tiny, specs, tmp_path / "f.tif", table=tmp_path / "f.parquet", options=EmbedOptions(**OPTS)
    )
    assert rep.computed == 4 and rep.skipped == 0
    assert rep.sensor_patches == {"s2_l1c": 64}  # 8 x 8 output pixels, all from S2 alone
    with rasterio.open(tmp_path / "f.tif") as o:
        emb = o.read()
    assert np.isfinite(emb).all()
    table = pq.read_table(tmp_path / "f.parquet").to_pydict()
    assert table["sensors"] == [["s2_l1c"]] * 4
    # Reference: the model on S2 alone (the fusion of one present sensor is the single path).
    w = WindowGrid(128, 128, 64, 64).windows()[3]
    x2, n2, _ = read_window(s2, w.row, w.col, w.height, w.width)
    fmap, cls = direct_embedding(tiny, {"s2_l1c": normalize(x2, "s2_l1c", n2)})
    np.testing.assert_allclose(emb[:, owned(w)[0], owned(w)[1]], fmap, atol=1e-4, rtol=0)
    np.testing.assert_allclose(table["embedding"][3], cls, atol=1e-4, rtol=0)

    # --missing-sensor nodata: every window is nodata, and the run says so.
    with caplog.at_level(logging.WARNING):
        opts = EmbedOptions(missing_sensor="nodata", **OPTS)
        rep = embed_scene(tiny, specs, tmp_path / "n.tif", options=opts)
    assert rep.skipped == 4 and rep.status == "done, ALL NODATA"
    assert "every window is nodata" in caplog.text
    with rasterio.open(tmp_path / "n.tif") as o:
        assert np.isnan(o.read()).all()


def test_s1_missing_over_part_of_a_window(tiny, floods, tmp_path):
    def hole(d):
        d[:, :40, :24] = np.nan  # window 0: patch rows 0-2, cols 0-1 lack S1 (6 of 16 patches)
        return d

    s1 = _crop(floods["s1"], tmp_path / "s1.tif", hole)
    s2 = _crop(floods["s2_l1c"], tmp_path / "s2.tif")
    specs = [SourceSpec("s2_l1c", str(s2)), SourceSpec("s1", str(s1))]
    fused = embed_scene(
        tiny, specs, tmp_path / "f.tif", table=tmp_path / "f.parquet", options=EmbedOptions(**OPTS)
    )
    strict = embed_scene(
        tiny, specs, tmp_path / "n.tif", options=EmbedOptions(missing_sensor="nodata", **OPTS)
    )
    assert fused.sensor_patches == {"s2_l1c+s1": 58, "s2_l1c": 6}
    assert strict.sensor_patches == {"s2_l1c+s1": 58}
    with rasterio.open(tmp_path / "f.tif") as f, rasterio.open(tmp_path / "n.tif") as n:
        a, b = f.read(), n.read()
    gap = np.zeros((8, 8), bool)
    gap[:3, :2] = True
    assert np.isnan(b[:, gap]).all() and np.isfinite(a).all()
    # Where both sensors are valid, fuse-available is the strict run exactly.
    np.testing.assert_array_equal(a[:, ~gap], b[:, ~gap])
    # The gap holds the S2-alone features of window 0.
    x2, n2, _ = read_window(s2, 0, 0, 64, 64)
    fmap, _ = direct_embedding(tiny, {"s2_l1c": normalize(x2, "s2_l1c", n2)})
    np.testing.assert_allclose(a[:, :3, :2], fmap[:, :3, :2], atol=1e-4, rtol=0)
    rows = pq.read_table(tmp_path / "f.parquet").to_pydict()
    assert rows["sensors"] == [["s2_l1c", "s1"]] * 4  # window 0's CLS: the set of most patches


def test_cli_missing_sensor_flag_and_summary(tiny, floods, tmp_path, capsys):
    from terrafm.checkpoint import save_weights

    ckpt = save_weights(tiny, tmp_path / "tiny.safetensors", "terrafm_tiny")
    s1 = _crop(floods["s1"], tmp_path / "s1.tif", _nan_s1)
    s2 = _crop(floods["s2_l1c"], tmp_path / "s2.tif")
    base = ["embed", "--input", f"s2_l1c={s2}", "--input", f"s1={s1}", "--checkpoint", str(ckpt)]
    base += ["--window", "64", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a.tif")]) == 0
    assert "pixels by sensors: s2_l1c 64" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "b.tif"), "--missing-sensor", "nodata"]) == 0
    assert "done, ALL NODATA; 4 windows (0 computed, 4 nodata" in capsys.readouterr().out
