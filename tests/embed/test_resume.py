"""Interrupted runs resume without redoing finished windows and give the same output."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from embed_fixtures import owned
from rasterio.windows import Window as RioWindow

from terrafm.embed import (
    EmbedError,
    EmbedInterrupted,
    EmbedOptions,
    ProgressError,
    SourceSpec,
    WindowGrid,
    embed_scene,
)
from terrafm.models import create_model

# 16 windows of 64 px over a 256 x 256 crop of the real S1 chip; 2 per batch; checkpoint every 2.
OPTS = dict(window=64, overlap=0, batch_size=2, progress=False, checkpoint_windows=2)
SIZE = 256


@pytest.fixture(scope="module")
def crop(floods, tmp_path_factory):
    """The top-left 256 x 256 pixels of the Sen1Floods11 S1 chip (VV, VH dB)."""
    with rasterio.open(floods["s1"]) as src:
        profile = {**src.profile, "width": SIZE, "height": SIZE}
        data = src.read(window=RioWindow(0, 0, SIZE, SIZE))
        names = src.descriptions
    path = tmp_path_factory.mktemp("crop") / "s1.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = names
    return {"s1": path}


def _specs(crop):
    return [SourceSpec("s1", str(crop["s1"]))]


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def straight(tiny, crop, tmp_path_factory):
    """An uninterrupted run: the expected output."""
    d = tmp_path_factory.mktemp("straight")
    embed_scene(
        tiny, _specs(crop), d / "a.tif", table=d / "a.parquet", options=EmbedOptions(**OPTS)
    )
    return _read(d / "a.tif"), pq.read_table(d / "a.parquet")


def _interrupt(tiny, crop, d, n=6):
    with pytest.raises(EmbedInterrupted) as e:
        embed_scene(
            tiny,
            _specs(crop),
            d / "b.tif",
            table=d / "b.parquet",
            options=EmbedOptions(**OPTS),
            max_windows=n,
        )
    return e.value.report


def test_resume_after_interruption_gives_identical_output(tiny, crop, tmp_path, straight):
    rep = _interrupt(tiny, crop, tmp_path)
    assert rep.status == "interrupted" and rep.done == 6 and rep.windows == 16
    progress = json.loads((tmp_path / "b.tif.progress.json").read_text())
    done = {int(i) for i in progress["done"]}  # readers finish windows in any order
    assert len(done) == 6
    partial = _read(tmp_path / "b.tif")
    for w in WindowGrid(SIZE, SIZE, 64, 64).windows():  # finished windows hold data, others nodata
        assert np.isfinite(partial[:, owned(w)[0], owned(w)[1]]).all() == (w.index in done)
    assert not (tmp_path / "b.parquet").exists() and (tmp_path / "b.parquet.parts").is_dir()

    rep = embed_scene(
        tiny,
        _specs(crop),
        tmp_path / "b.tif",
        table=tmp_path / "b.parquet",
        options=EmbedOptions(**OPTS),
    )
    assert (rep.status, rep.resumed, rep.computed, rep.recomputed) == ("done", 6, 10, 0)
    emb, table = straight
    np.testing.assert_array_equal(_read(tmp_path / "b.tif"), emb)
    got = pq.read_table(tmp_path / "b.parquet")
    assert got.drop_columns(["embedding"]).equals(table.drop_columns(["embedding"]))
    np.testing.assert_array_equal(
        np.stack(got.column("embedding").to_pylist()),
        np.stack(table.column("embedding").to_pylist()),
    )
    assert not (tmp_path / "b.tif.progress.json").exists()


def test_resume_recomputes_blocks_that_do_not_match_the_progress(tiny, crop, tmp_path, straight):
    _interrupt(tiny, crop, tmp_path)
    parts = tmp_path / "b.parquet.parts"
    lost = set(pq.read_table(parts / "part-00001.parquet").column("window_id").to_pylist())
    progress = json.loads((tmp_path / "b.tif.progress.json").read_text())
    damaged = max(int(i) for i in progress["done"] if int(i) not in lost)
    w = WindowGrid(SIZE, SIZE, 64, 64).windows()[damaged]
    with rasterio.open(tmp_path / "b.tif", "r+") as dst:  # damage a finished block
        dst.write(np.zeros((96, 2, 2), np.float32), window=RioWindow(w.own_col0, w.own_row0, 2, 2))
    (parts / "part-00001.parquet").unlink()  # and lose a table part
    opts = EmbedOptions(**OPTS)
    rep = embed_scene(
        tiny, _specs(crop), tmp_path / "b.tif", table=tmp_path / "b.parquet", options=opts
    )
    assert len(lost) == 2 and (rep.recomputed, rep.resumed, rep.computed) == (3, 3, 13)
    np.testing.assert_array_equal(_read(tmp_path / "b.tif"), straight[0])
    assert pq.read_table(tmp_path / "b.parquet").column("window_id").to_pylist() == list(range(16))


def test_resume_refuses_a_different_run(tiny, crop, tmp_path, deterministic):
    _interrupt(tiny, crop, tmp_path)
    with pytest.raises(ProgressError, match="different window"):
        embed_scene(
            tiny,
            _specs(crop),
            tmp_path / "b.tif",
            table=tmp_path / "b.parquet",
            options=EmbedOptions(**{**OPTS, "window": 256}),
        )
    other = create_model("terrafm_tiny")  # other weights
    with pytest.raises(ProgressError, match="different weights"):
        embed_scene(
            other,
            _specs(crop),
            tmp_path / "b.tif",
            table=tmp_path / "b.parquet",
            options=EmbedOptions(**OPTS),
        )


def test_finished_output_is_up_to_date_and_protected(tiny, crop, tmp_path):
    opts = EmbedOptions(**OPTS)
    embed_scene(tiny, _specs(crop), tmp_path / "c.tif", options=opts)
    again = embed_scene(tiny, _specs(crop), tmp_path / "c.tif", options=opts)
    assert again.status == "up-to-date" and again.computed == 0
    changed = {**OPTS, "min_valid": 0.5}
    with pytest.raises(EmbedError, match=r"c\.tif exists.*--overwrite"):
        embed_scene(tiny, _specs(crop), tmp_path / "c.tif", options=EmbedOptions(**changed))
    redo = EmbedOptions(**changed, overwrite=True)
    rep = embed_scene(tiny, _specs(crop), tmp_path / "c.tif", options=redo)
    assert rep.status == "done" and rep.computed == 16
