"""Streaming PCA of an embedding raster equals a plain SVD; the preview masks nodata."""

import numpy as np
import pytest
from embed_fixtures import write_raster
from rasterio.transform import Affine

from terrafm.embed import pca as pca_mod
from terrafm.embed.pca import fit_pca, pca_preview, write_preview


@pytest.fixture
def raster(tmp_path):
    rng = np.random.default_rng(0)
    h, w, d = 30, 40, 12
    # three strong directions plus noise, offset far from 0 to exercise the centring
    basis = rng.normal(size=(3, d))
    coef = rng.normal(size=(h * w, 3)) * np.array([10.0, 5.0, 2.0])
    x = 1000.0 + coef @ basis + 0.1 * rng.normal(size=(h * w, d))
    data = x.T.reshape(d, h, w).astype(np.float32)
    data[:, 3:7, 5:9] = np.nan  # nodata
    path = write_raster(
        tmp_path / "emb.tif", data, Affine(160, 0, 0, 0, -160, 0), nodata=float("nan")
    )
    return path, data


def test_streaming_pca_equals_svd(raster, monkeypatch):
    path, data = raster
    monkeypatch.setattr(pca_mod, "_STRIP_BYTES", 40 * 12 * 4 * 7)  # several strips of 7 rows
    got = fit_pca(path, k=3)
    x = data.reshape(data.shape[0], -1).T.astype(np.float64)
    x = x[np.isfinite(x).all(1)]
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    assert got.count == len(x)
    np.testing.assert_allclose(got.mean, x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(got.variance, s[:3] ** 2 / (len(x) - 1), rtol=1e-4)
    np.testing.assert_allclose(np.abs(got.components @ vt[:3].T), np.eye(3), atol=1e-4)
    for c in got.components:  # deterministic sign
        assert c[np.abs(c).argmax()] > 0


def test_preview_is_rgba_with_transparent_nodata(raster, tmp_path):
    path, _ = raster
    img = pca_preview(path)
    assert img.shape == (30, 40, 4) and img.dtype == np.uint8
    assert (img[3:7, 5:9, 3] == 0).all() and (img[..., 3] == 255).sum() == 30 * 40 - 16
    assert img[..., 0][img[..., 3] > 0].std() > 30  # stretched, not flat
    png = write_preview(path, tmp_path / "p.png")
    from matplotlib.image import imread

    assert imread(png).shape == (30, 40, 4)


def test_no_valid_pixels_is_a_clear_error(tmp_path):
    path = write_raster(
        tmp_path / "e.tif", np.full((4, 5, 5), np.nan, np.float32), Affine(160, 0, 0, 0, -160, 0)
    )
    with pytest.raises(ValueError, match="fewer than two valid pixels"):
        fit_pca(path)
