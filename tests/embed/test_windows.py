"""Window tiling: every output pixel owned by exactly one window, central parts, edge windows."""

import numpy as np
import pytest

from terrafm.embed.windows import WindowGrid, axis_starts, owned_ranges


@pytest.mark.parametrize(
    "length,size,stride",
    [(10, 4, 4), (10, 4, 2), (14, 14, 14), (5, 14, 12), (100, 14, 12), (687, 14, 14), (31, 8, 3)],
)
def test_axis_starts_cover_and_partition(length, size, stride):
    starts = axis_starts(length, size, stride)
    s = min(size, length)
    assert starts[0] == 0 and starts[-1] == length - s
    assert all(0 < b - a <= min(stride, s) for a, b in zip(starts, starts[1:]))
    owned = owned_ranges(starts, s)
    cover = np.zeros(length, int)
    for (b, e), a in zip(owned, starts):
        assert a <= b < e <= a + s  # a window only owns pixels inside itself
        cover[b:e] += 1
    assert (cover == 1).all()


def test_overlap_is_split_in_the_middle():
    # windows of 8 patches every 6: overlap [6, 8) split at 7
    assert owned_ranges([0, 6, 12], 8) == [(0, 7), (7, 13), (13, 20)]


def test_grid_windows_partition_the_output_raster():
    g = WindowGrid(1000, 700, 224, 192)  # partial last patch row/col, overlap 32
    assert g.out_shape == (63, 44)
    cover = np.zeros(g.out_shape, int)
    for w in g.windows():
        assert (w.height, w.width) == (224, 224) and w.row % 16 == 0 and w.col % 16 == 0
        assert w.row + w.height <= 63 * 16 and w.col + w.width <= 44 * 16
        cover[w.own_row0 : w.own_row1, w.own_col0 : w.own_col1] += 1
        rs, cs = w.own_slices(16)
        assert rs.start >= 0 and rs.stop <= 14 and cs.start >= 0 and cs.stop <= 14
    assert (cover == 1).all()
    assert [w.index for w in g.windows()] == list(range(len(g)))


def test_interior_window_owns_its_centre_with_overlap():
    g = WindowGrid(2048, 2048, 256, 192)  # 16-patch windows every 12: 2 patches trimmed per side
    w = next(w for w in g.windows() if w.row == 192 * 2 and w.col == 192 * 2)
    rs, cs = w.own_slices(16)
    assert (rs.start, rs.stop, cs.start, cs.stop) == (2, 14, 2, 14)


def test_scene_smaller_than_window_uses_one_smaller_window():
    g = WindowGrid(100, 40, 224, 224)
    (w,) = g.windows()
    assert (w.height, w.width) == (112, 48) and g.out_shape == (7, 3)


@pytest.mark.parametrize("window,stride", [(200, 200), (224, 100), (224, 240), (0, 0)])
def test_bad_window_parameters_are_refused(window, stride):
    with pytest.raises(ValueError):
        WindowGrid(512, 512, window, stride)
