"""``change_map``: cosine distance between embedding rasters of one grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from terrafm.search import ChangeError, IdentityError, change_map
from terrafm.search.change import MASK_NODATA


def _read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cos per pixel, computed plainly in float64 pixel by pixel."""
    out = np.full(a.shape[1:], np.nan)
    for i in range(a.shape[1]):
        for j in range(a.shape[2]):
            u, v = a[:, i, j].astype(np.float64), b[:, i, j].astype(np.float64)
            if np.isfinite(u).all() and np.isfinite(v).all():
                out[i, j] = 1 - u @ v / np.sqrt((u @ u) * (v @ v))
    return out


def _copy(src_path, dst_path, edit=None, tags=None, transform=None):
    with rasterio.open(src_path) as src:
        profile, data, old = src.profile, src.read(), src.tags()
    if edit is not None:
        data = edit(data.copy())
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**{**old, **(tags or {})})
    return dst_path


def test_a_scene_against_itself_is_zero(scenes, tmp_path):
    rep = change_map(scenes.tif("orig"), scenes.tif("orig"), tmp_path / "d.tif")
    d = _read(tmp_path / "d.tif")[0]
    assert d.shape == (32, 32) and np.isfinite(d).all()
    assert np.abs(d).max() < 1e-6 and rep.valid == 32 * 32 and rep.max < 1e-6


def test_a_modified_copy_peaks_where_it_was_modified(scenes, tmp_path):
    out, mask = tmp_path / "d.tif", tmp_path / "m.tif"
    rep = change_map(scenes.tif("orig"), scenes.tif("mod"), out, threshold=0.3, mask=mask)
    d = _read(out)[0]
    # the overwritten input pixels are exactly output patch (17, 9)
    patch = (scenes.edit[0].start // 16, scenes.edit[1].start // 16)
    assert np.unravel_index(np.nanargmax(d), d.shape) == patch
    # only the window holding the patch (output rows 16..19, cols 8..11) changed at all
    outside = d.copy()
    outside[16:20, 8:12] = np.nan
    assert np.nanmax(outside) < 1e-6 and d[patch] > 0.3
    np.testing.assert_allclose(
        d, _reference(_read(scenes.tif("orig")), _read(scenes.tif("mod"))), atol=1e-6
    )
    m = _read(mask)[0]
    assert rep.changed == int((m == 1).sum()) == int((d > 0.3).sum()) >= 1
    with rasterio.open(out) as src, rasterio.open(scenes.tif("orig")) as ref:
        assert (src.crs, src.transform, src.dtypes[0]) == (ref.crs, ref.transform, "float32")


def test_nodata_in_either_input_is_nodata(scenes, tmp_path):
    def holes(a):
        a[:, 3:5, 7] = np.nan
        return a

    b = _copy(scenes.tif("mod"), tmp_path / "b.tif", edit=holes)
    change_map(scenes.tif("orig"), b, tmp_path / "d.tif", threshold=0.1, mask=tmp_path / "m.tif")
    d, m = _read(tmp_path / "d.tif")[0], _read(tmp_path / "m.tif")[0]
    assert np.isnan(d[3:5, 7]).all() and np.isfinite(d).sum() == 32 * 32 - 2
    assert (m[3:5, 7] == MASK_NODATA).all() and set(np.unique(m)) <= {0, 1, MASK_NODATA}


def test_different_grids_or_models_are_errors(scenes, tmp_path):
    with rasterio.open(scenes.tif("orig")) as src:
        t = src.transform
    shifted = _copy(scenes.tif("orig"), tmp_path / "s.tif", transform=t @ t.translation(1, 0))
    with pytest.raises(ChangeError, match="not on the same grid: transform"):
        change_map(scenes.tif("orig"), shifted, tmp_path / "d.tif")
    with pytest.raises(IdentityError, match=r"different models.*weights"):
        change_map(scenes.tif("orig"), scenes.tif("other"), tmp_path / "d.tif")
    relabel = _copy(scenes.tif("orig"), tmp_path / "r.tif", tags={"TERRAFM_MODEL": "terrafm_base"})
    with pytest.raises(IdentityError, match="model 'terrafm_tiny' vs 'terrafm_base'"):
        change_map(scenes.tif("orig"), relabel, tmp_path / "d.tif")
    with pytest.raises(ChangeError, match=r"in_flip\.tif: no TERRAFM_MODEL tag"):
        change_map(scenes.root / "in_flip.tif", scenes.tif("orig"), tmp_path / "d.tif")


def test_embed_outputs_record_the_weights_digest(scenes, tiny):
    """What the identity checks compare: the raster tag and the table fingerprint."""
    import pyarrow.parquet as pq

    from terrafm.weights.fingerprint import model_fingerprint

    with rasterio.open(scenes.tif("orig")) as a, rasterio.open(scenes.tif("other")) as b:
        assert a.tags()["TERRAFM_WEIGHTS"] == model_fingerprint(tiny) != b.tags()["TERRAFM_WEIGHTS"]
    meta = json.loads(pq.read_schema(scenes.table("orig")).metadata[b"terrafm"])
    assert meta["fingerprint"]["weights"] == model_fingerprint(tiny)
