"""The embedding GeoTIFF writer: tile-row buffering never loses or misplaces a window's block."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from terrafm.embed.windows import WindowGrid
from terrafm.embed.writer import TILE, EmbeddingWriter, block_checksum

D = 5


def _writer(path, grid):
    h, w = grid.out_shape
    return EmbeddingWriter(path, D, h, w, "EPSG:32633", Affine(10, 0, 300000, 0, -10, 5900000), {})


def _blocks(grid, seed=0):
    rng = np.random.default_rng(seed)
    return {
        w.index: rng.standard_normal((D, *w.own_shape)).astype(np.float32) for w in grid.windows()
    }


def _expected(grid, blocks, indices):
    out = np.full((D, *grid.out_shape), np.nan, dtype=np.float32)
    for w in grid.windows():
        if w.index in indices:
            out[:, w.own_row0 : w.own_row1, w.own_col0 : w.own_col1] = blocks[w.index]
    return out


def _on_disk(path):
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("size,stride", [(224, 224), (224, 160)])
def test_every_block_lands_where_it_belongs(tmp_path, size, stride):
    grid = WindowGrid(900, 700, size, stride)  # 57 x 44 output px: rows of tiles end partial
    blocks = _blocks(grid)
    wr = _writer(tmp_path / "e.tif", grid)
    wr.create()
    for w in grid.windows():
        assert wr.write(w, blocks[w.index]) == block_checksum(blocks[w.index])
    wr.flush()
    np.testing.assert_array_equal(_on_disk(wr.path), _expected(grid, blocks, set(blocks)))
    for w in grid.windows():  # read-back, as resume verification does it
        np.testing.assert_array_equal(wr.read(w), blocks[w.index])


def test_flush_mid_row_then_resume_in_a_new_writer(tmp_path):
    """A checkpoint in the middle of a tile row, a crash, a new writer on the same file."""
    grid = WindowGrid(900, 700, 224, 224)
    blocks = _blocks(grid, seed=1)
    windows = grid.windows()
    first = {w.index for w in windows[: len(windows) // 2 + 1]}  # ends inside a tile row
    wr = _writer(tmp_path / "e.tif", grid)
    wr.create()
    for w in windows:
        if w.index in first:
            wr.write(w, blocks[w.index])
    wr.flush()
    assert wr._rows, "the test must stop inside a partly filled tile row"
    np.testing.assert_array_equal(_on_disk(wr.path), _expected(grid, blocks, first))
    # blocks written after the last flush are not on disk yet, and not claimed as done
    late = windows[-1]
    wr.write(late, blocks[late.index])
    np.testing.assert_array_equal(_on_disk(wr.path), _expected(grid, blocks, first))
    del wr  # crash: the buffer is lost

    resumed = _writer(tmp_path / "e.tif", grid)
    assert resumed.matches() is None
    for w in windows:
        if w.index not in first:
            resumed.write(w, blocks[w.index])
    resumed.flush()
    np.testing.assert_array_equal(_on_disk(resumed.path), _expected(grid, blocks, set(blocks)))


def test_complete_rows_are_written_without_a_flush(tmp_path):
    grid = WindowGrid(900, 700, 224, 224)
    blocks = _blocks(grid, seed=2)
    wr = _writer(tmp_path / "e.tif", grid)
    wr.create()
    done = set()
    for w in grid.windows():
        if w.own_row0 >= TILE:  # two window rows: tile row 0 complete, tile row 1 partly filled
            break
        wr.write(w, blocks[w.index])
        done.add(w.index)
    wr._dst.close()  # what is on disk now, without flush()
    wr._dst = None
    got = _on_disk(wr.path)[:, :TILE]
    np.testing.assert_array_equal(got, _expected(grid, blocks, done)[:, :TILE])
    assert list(wr._rows) == [1]
