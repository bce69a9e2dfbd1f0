"""Window-exact upsampling equals resampling the whole band (PyTorch's bilinear / nearest)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terrafm.io.resample import axis_map, upsample


def _window(band, valid, r0, c0, h, w, f, mode):
    rows = axis_map(r0, h, band.shape[1], band.shape[1] * f, mode)
    cols = axis_map(c0, w, band.shape[2], band.shape[2] * f, mode)
    block = band[:, rows.base : rows.stop, cols.base : cols.stop]
    v = valid[rows.base : rows.stop, cols.base : cols.stop]
    return upsample(block, v, rows, cols)


@pytest.mark.parametrize("f", [2, 6])
@pytest.mark.parametrize(
    "r0,c0,h,w", [(0, 0, 48, 64), (37, 5, 32, 80), (80, 100, 40, 20), (90, 0, 30, 120)]
)
def test_bilinear_window_equals_full_band_interpolation(f, r0, c0, h, w):
    rng = np.random.default_rng(f)
    band = rng.normal(1000, 300, (3, 120 // f, 120 // f)).astype(np.float32)
    full = F.interpolate(
        torch.from_numpy(band)[None], scale_factor=f, mode="bilinear", align_corners=False
    )[0]
    got, v = _window(band, np.ones(band.shape[1:], bool), r0, c0, h, w, f, "bilinear")
    np.testing.assert_allclose(got, full[:, r0 : r0 + h, c0 : c0 + w].numpy(), rtol=1e-5, atol=0)
    assert v.all()


def test_nearest_window_equals_pixel_repeat():
    band = np.arange(2 * 20 * 20, dtype=np.float32).reshape(2, 20, 20)
    full = band.repeat(6, axis=1).repeat(6, axis=2)
    got, _ = _window(band, np.ones((20, 20), bool), 13, 29, 50, 61, 6, "nearest")
    np.testing.assert_array_equal(got, full[:, 13:63, 29:90])


def test_invalid_coarse_pixel_invalidates_every_pixel_it_feeds():
    band = np.ones((1, 10, 10), np.float32)
    valid = np.ones((10, 10), bool)
    valid[4, 7] = False
    _, v = _window(band, valid, 0, 0, 20, 20, 2, "bilinear")
    bad = np.argwhere(~v)
    # fine pixels 7..10 (rows) x 13..16 (cols) read coarse row/col 4/7 with some weight
    assert (
        bad[:, 0].min() == 7
        and bad[:, 0].max() == 10
        and bad[:, 1].min() == 13
        and bad[:, 1].max() == 16
    )
    _, vn = _window(band, valid, 0, 0, 20, 20, 2, "nearest")
    assert np.argwhere(~vn).tolist() == [[8, 14], [8, 15], [9, 14], [9, 15]]
