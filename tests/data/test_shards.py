"""Training shards: prepare (resumable, bad rows counted), crop-window reads, and views equal to
the parquet path's on the same sample keys (within the storage quantisation)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_majortom import make_root, rewrite_image_file

from terrafm.data.batch_multicrop import (
    BatchMultiCrop,
    _composed_taps,
    aa_weights,
    bilinear_weights,
    composed_weights,
    upsample_weights,
)
from terrafm.data.loader import CurationConfig, build_pretrain_dataset, build_pretrain_loader
from terrafm.data.multicrop import MultiCropConfig, collate_views
from terrafm.data.resize_kernel import EMPTY_OUT, resize_into
from terrafm.data.shards import (
    ENCODINGS,
    ShardError,
    ShardStore,
    build_shard_dataset,
    build_shard_loader,
    collate_raw,
    decode,
    group_span,
    prepare_shards,
)
from terrafm.data.sources import MajorTomSource
from terrafm.sensors import get_sensor

SENSORS = ("s1", "s2_l1c", "s2_l2a")
VIEWS = MultiCropConfig(global_size=16, local_size=16, n_local=2)


def _bound(sensor: str, native: bool = True) -> float:
    """Largest difference of a z-scored view value from the parquet path's.

    S1 dB values are quantised to 1/256 dB (half a stored step over the smallest band std). S2
    DN are integers: a native-resolution store keeps them exactly and resizes the 20 m / 60 m
    bands with the product of the two resamplings the parquet path applies one after the other
    (bilinear onto the 10 m grid, then the view's filter), so only float rounding remains (1e-4;
    measured <= 2e-6). A store on the 10 m grid (``native=False``, version 1) rounds the
    resampled 20 m / 60 m values to whole DN: half a DN over the smallest band std.
    """
    exact = sensor != "s1" and native
    return (
        0.0 if exact else 0.5 * ENCODINGS[sensor].scale / min(get_sensor(sensor).stats.std)
    ) + 1e-4


def _same_reads(x: dict, y: dict) -> bool:  # type: ignore[type-arg]
    """Two ``ShardStore.read`` results hold the same windows."""
    return x.keys() == y.keys() and all(
        len(x[s]) == len(y[s])
        and all(
            np.array_equal(a.data, b.data)
            and (a.factor, a.bands, a.origin) == (b.factor, b.bands, b.origin)
            for a, b in zip(x[s], y[s])
        )
        for s in x
    )


def _on_grid(sensor: str, windows: tuple, size: int) -> np.ndarray:  # type: ignore[type-arg]
    """Whole-tile group windows -> (C, size, size) model units on the 10 m grid."""
    out = np.zeros((get_sensor(sensor).num_bands, size, size))
    for g in windows:
        x = decode(sensor, g.data).astype(np.float64)
        if g.factor > 1:
            ur = upsample_weights(x.shape[1], size, g.factor, g.origin[0])
            uc = upsample_weights(x.shape[2], size, g.factor, g.origin[1])
            x = ur @ x @ uc.T
        out[list(g.bands)] = x
    return out


@pytest.fixture(scope="module")
def store(mt_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "store"
    report = prepare_shards([mt_root], out, SENSORS, tiles_per_shard=3)
    assert report.tiles == 20 and report.shards == 7 and report.written == 7
    assert not report.skipped
    return out


def _compare(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["landcover"], b["landcover"])
    for key in ("teacher", "student_global", "student_local"):
        assert len(a[key]) == len(b[key])
        for va, vb in zip(a[key], b[key]):
            for s in SENSORS:
                assert torch.equal(va["masks"][s], vb["masks"][s]), (key, s)
                diff = (va["inputs"][s] - vb["inputs"][s]).abs().max().item()
                assert diff <= _bound(s), (key, s, diff)


def test_aa_weights_equal_interpolate() -> None:
    g = torch.Generator().manual_seed(0)
    for n_in, n_out in [(5, 16), (24, 16), (37, 96), (119, 96), (224, 224), (534, 224), (300, 96)]:
        x = torch.randn(1, 2, n_in, n_in + 3, generator=g, dtype=torch.float64)
        ref = F.interpolate(x, size=(n_out, n_out), mode="bilinear", antialias=True)
        r = torch.from_numpy(aa_weights(n_in, n_out)).double()
        c = torch.from_numpy(aa_weights(n_in + 3, n_out)).double()
        # the weights are float32: equal to PyTorch's up to their rounding
        torch.testing.assert_close(r @ x @ c.T, ref, rtol=0, atol=1e-6)


def test_bilinear_weights_equal_interpolate() -> None:
    g = torch.Generator().manual_seed(0)
    for n_in, n_out in [(5, 16), (24, 16), (37, 96), (119, 96), (224, 224), (534, 224), (300, 96)]:
        x = torch.randn(1, 2, n_in, n_in + 3, generator=g, dtype=torch.float64)
        ref = F.interpolate(x, size=(n_out, n_out), mode="bilinear", align_corners=False)
        r = torch.from_numpy(bilinear_weights(n_in, n_out)).double()
        c = torch.from_numpy(bilinear_weights(n_in + 3, n_out)).double()
        torch.testing.assert_close(r @ x @ c.T, ref, rtol=0, atol=1e-6)
        # a different filter from the antialiased one whenever it shrinks
        if n_in > n_out:
            assert (r - torch.from_numpy(aa_weights(n_in, n_out)).double()).abs().max() > 0.01


def test_stored_tiles_decode_to_the_reader_tiles(mt_root: Path, store: Path) -> None:
    st = ShardStore(store)
    assert st.attrs["version"] == 2
    assert [(g.factor, g.halo) for g in st.layout["s2_l1c"]] == [(1, 0), (2, 1), (6, 1)]
    assert [g.bands for g in st.layout["s2_l2a"]] == [(1, 2, 3, 7), (4, 5, 6, 8, 10, 11), (0, 9)]
    assert [g.factor for g in st.layout["s1"]] == [1]
    src = MajorTomSource(mt_root, SENSORS)
    bands = [b for b in src.products["s2_l2a"].spec.bands if b != "B10"]
    for cell in (0, 3):
        native = src.products["s2_l2a"].read_cell(src._rows[cell]["s2_l2a"])
        for tile in range(4):
            ref, errors = src.read_tile(cell, tile, SENSORS)
            assert not errors
            row = st.row(0, cell, tile)
            data, valid = st.read(row, SENSORS, (0, 0, st.tile_size, st.tile_size))
            for k, s in enumerate(SENSORS):
                np.testing.assert_array_equal(valid[k], ref[s].valid)
                # resampled onto the 10 m grid: the reader's tile, S1 to its dB step, S2 to float
                # rounding (its integers are stored exactly, also the 20 m and 60 m ones)
                got = _on_grid(s, data[s], st.tile_size)
                tol = ENCODINGS[s].scale / 2 + 1e-3 if s == "s1" else 1e-3
                assert np.abs(got - ref[s].data)[:, ref[s].valid].max() <= tol, s
            # the stored 20 m / 60 m pixels are the product's native pixels of the tile plus a
            # one-pixel halo (the neighbouring tile's, or the edge pixel repeated at the cell edge)
            for g in data["s2_l2a"][1:]:
                n = st.tile_size // g.factor
                r, c = (tile // 2) * n, (tile % 2) * n
                for j, b in enumerate(g.bands):
                    full = np.pad(native[bands[b]].data[0].astype(np.int64), 1, mode="edge")
                    want = full[r : r + n + 2, c : c + n + 2]
                    np.testing.assert_array_equal(decode("s2_l2a", g.data[j]), want)


def test_crop_window_reads_equal_slicing_the_full_tile(mt_root: Path, tmp_path: Path) -> None:
    # 24 px tiles in 10 px chunks at 10 m (5 px at 20 m, 2 px at 60 m; the last ones partly
    # outside the tile): windows of every resolution cross chunks
    prepare_shards([mt_root], tmp_path / "s", SENSORS, tiles_per_shard=4, chunk=10)
    st, ref = ShardStore(tmp_path / "s"), ShardStore(tmp_path / "s", direct=False)
    assert st.attrs["chunk"] == 10
    from terrafm.data.shards import _ShardedArray

    for name in ("s2_l2a_10m", "s2_l2a_20m", "s2_l2a_60m", "s1"):  # read directly, chunk by chunk
        assert isinstance(st._array(name), _ShardedArray)
    rng = np.random.default_rng(0)
    for row in (2, 13):
        full = {}
        for s in SENSORS:
            for g in st.layout[s]:
                n = 24 // g.factor + 2 * g.halo
                full[g.array] = ref._window(g.array, row, (0, 0, n, n))
        full_valid = ref._window("valid", row, (0, 0, 24, 24))
        for _ in range(10):
            top, left = (int(v) for v in rng.integers(0, 20, 2))
            h, w = int(rng.integers(1, 24 - top + 1)), int(rng.integers(1, 24 - left + 1))
            for store in (st, ref):  # the direct chunk reader and zarr's own
                data, valid = store.read(row, ["s2_l2a", "s1"], (top, left, h, w))
                for s in ("s2_l2a", "s1"):
                    for g, gw in zip(st.layout[s], data[s]):
                        r0, r1, o_r = group_span(top, h, g.factor, g.halo)
                        c0, c1, o_c = group_span(left, w, g.factor, g.halo)
                        want = full[g.array][:, r0:r1, c0:c1]
                        np.testing.assert_array_equal(gw.data, want)
                        assert gw.origin == (o_r, o_c) and gw.bands == g.bands
                        if g.factor == 1:
                            assert (r0, r1, c0, c1) == (top, top + h, left, left + w)
                want_v = full_valid[[2, 0], top : top + h, left : left + w]
                np.testing.assert_array_equal(valid, want_v)


def test_group_span_covers_what_bilinear_resampling_reads() -> None:
    # the stored window holds both neighbours of every 10 m pixel of the box, and the origin
    # maps the box's pixels to the same native positions as the whole tile's resampling
    for factor, size in ((2, 534), (6, 534), (2, 24), (6, 24)):
        n = size // factor + 2
        whole = upsample_weights(n, size, factor, 0.5 / factor + 0.5)  # halo 1
        for top, h in (
            (0, size),
            (0, 1),
            (1, 7),
            (size - 5, 5),
            (97 % size, min(300, size - 97 % size)),
        ):
            lo, hi, origin = group_span(top, h, factor, 1)
            assert 0 <= lo < hi <= n
            part = upsample_weights(hi - lo, h, factor, origin)
            np.testing.assert_allclose(part, whole[top : top + h, lo:hi], atol=1e-12)
            assert (
                np.abs(whole[top : top + h, :lo]).sum()
                == 0
                == np.abs(whole[top : top + h, hi:]).sum()
            )


def test_composed_weights_equal_resampling_twice() -> None:
    # one matrix per axis (native -> view) equals upsampling to the 10 m grid, then the view's
    # filter (the parquet path's two steps), for shrinking and enlarging views and both filters
    rng = np.random.default_rng(1)
    for resample in ("antialias", "bilinear"):
        for factor, n_in, start, count, size in (
            (2, 152, 3, 300, 224),
            (2, 40, 0, 70, 96),
            (6, 52, 5, 290, 224),
            (6, 8, 0, 20, 96),
        ):
            origin = float(rng.uniform(0, 1))
            x = rng.normal(size=(n_in,))
            up = upsample_weights(n_in, start + count, factor, origin)[start:] @ x
            x10 = torch.from_numpy(up)[None, None, :, None].expand(1, 1, count, 2).contiguous()
            from terrafm.data.multicrop import resize

            want = resize(x10, size, resample)[0, 0, :, 0].numpy()
            dense = composed_weights(resample, n_in, factor, origin, start, count, size)
            np.testing.assert_allclose(dense @ x, want, atol=1e-5 * np.abs(x).max())
            # the taps the CPU kernel uses are the same weights (flipped: rows reversed)
            idx, wts = _composed_taps(resample, n_in, factor, origin, start, count, size)
            np.testing.assert_allclose(_dense_from_taps(idx, wts, n_in), dense, atol=1e-7)


def _dense_from_taps(idx: np.ndarray, wts: np.ndarray, n_in: int) -> np.ndarray:
    """(outputs, n_in) float64 matrix of taps (repeated indices summed), the plain reference."""
    out = np.zeros((idx.shape[0], n_in))
    np.add.at(out, (np.arange(idx.shape[0])[:, None], idx), wts)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16])
@pytest.mark.parametrize("resample", ["antialias", "bilinear"])
def test_resize_kernel_equals_dense_products(resample: str, dtype: type) -> None:
    # the compiled CPU kernel against a plain float64 R @ x @ Cᵀ, z-scored, for shrinking and
    # enlarging views, coarse (composed) and 10 m taps, flips, a channel map and two outputs;
    # float windows and the stored integers alike
    rng = np.random.default_rng(2)
    for factor, n_in, start, count, size, flip in (
        (1, 300, 7, 280, 224, False),
        (1, 40, 3, 30, 96, True),
        (1, 24, 0, 5, 16, True),
        (2, 152, 3, 300, 224, True),
        (6, 52, 5, 290, 96, False),
    ):
        origin = float(rng.uniform(0, 1)) if factor > 1 else 0.0
        x = rng.integers(0, 4000, size=(3, n_in, n_in + 2)).astype(dtype)
        r_idx, r_w = _composed_taps(resample, n_in, factor, origin, start, count, size)
        c_idx, c_w = _composed_taps(resample, n_in + 2, factor, origin, start, count, size)
        if flip:
            c_idx, c_w = c_idx[::-1], c_w[::-1]
        rows, cols = _dense_from_taps(r_idx, r_w, n_in), _dense_from_taps(c_idx, c_w, n_in + 2)
        taps = (
            np.ascontiguousarray(r_idx, dtype=np.int64),
            np.ascontiguousarray(r_w, dtype=np.float32),
            np.ascontiguousarray(c_idx, dtype=np.int64),
            np.ascontiguousarray(c_w, dtype=np.float32),
        )
        scale = np.array([1e-3, 2e-3, 5e-4], np.float32)
        shift = np.array([-1.0, 0.5, 2.0], np.float32)
        chan = np.array([4, 0, 2], np.int64)
        out1 = np.full((5, size, size), np.nan, np.float32)
        out2 = np.full((5, size, size), np.nan, np.float32)
        resize_into(x, *taps, scale, shift, chan, out1, out2)
        for c in range(3):
            want = scale[c] * (rows @ x[c].astype(np.float64) @ cols.T) + shift[c]
            np.testing.assert_allclose(out1[chan[c]], want, atol=2e-5, rtol=1e-5)
        np.testing.assert_array_equal(out1, out2)
        assert np.isnan(out1[[1, 3]]).all()  # channels not in the map are left alone
        one = np.zeros((5, size, size), np.float32)
        resize_into(x, *taps, scale, shift, chan, one, EMPTY_OUT)
        np.testing.assert_array_equal(one[chan], out1[chan])


@pytest.mark.parametrize("resample", ["antialias", "bilinear"])
@pytest.mark.parametrize("resize", ["taps", "matmul"])
def test_views_equal_the_parquet_path_on_the_same_keys(
    mt_root: Path, store: Path, resize: str, resample: str
) -> None:
    # tiles of 24 px, crops of 1..24 px: both shrinking and enlarging resizes are compared
    views = replace(VIEWS, resample=resample)
    ref = build_pretrain_dataset([mt_root], SENSORS, views=views, seed=3)
    shards = build_shard_dataset(store, SENSORS, views=views, seed=3)
    assert len(ref) == len(shards) == 20
    assert np.array_equal(ref.tiles.strata(), shards.tiles.strata())
    augment = BatchMultiCrop(views, SENSORS, ENCODINGS, "cpu", resize=resize)
    keys = [(i, 2, 40 + i) for i in range(len(ref))]
    for lo in range(0, 20, 5):
        batch = keys[lo : lo + 5]
        a = collate_views([ref[k] for k in batch], SENSORS)
        items = [shards[k] for k in batch]
        _compare(a, augment(collate_raw(items, SENSORS)))
        if resize == "taps":  # the loader's CPU path: straight from the items
            _compare(a, augment.from_samples(items))
    if resample == "bilinear":  # the filter matters: the antialiased views differ
        other = build_pretrain_dataset([mt_root], SENSORS, views=VIEWS, seed=3)
        diff = max(
            (v["inputs"][s] - w["inputs"][s]).abs().max().item()
            for k in keys[:5]
            for v, w in zip(ref[k]["teacher"], other[k]["teacher"])
            for s in v["sensors"]
        )
        assert diff > 0.01


def test_loader_batches_match_and_resume_exactly(mt_root: Path, store: Path) -> None:
    kw = {"views": VIEWS, "seed": 1, "samples_per_epoch": 12}
    parquet = build_pretrain_loader([mt_root], SENSORS, 4, **kw)  # type: ignore[arg-type]
    shard = build_shard_loader(store, SENSORS, 4, augment_device="cpu", **kw)  # type: ignore[arg-type]
    parquet.set_epoch(1)
    shard.set_epoch(1)
    a, b = list(parquet), list(shard)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        _compare(x, y)
    # resume after one batch, with a worker: the remaining batches are identical
    resumed = build_shard_loader(
        store,
        SENSORS,
        4,
        augment_device="cpu",
        num_workers=1,
        **kw,  # type: ignore[arg-type]
    )
    state = shard.state_dict()
    state["sampler"]["position"] = 4  # type: ignore[index]
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = list(resumed)
    assert len(rest) == 2
    for x, y in zip(b[1:], rest):
        assert torch.equal(x["index"], y["index"])
        for v, w in zip(x["student_local"], y["student_local"]):
            for s in SENSORS:
                assert torch.equal(v["inputs"][s], w["inputs"][s])


def test_interrupted_prepare_resumes(mt_root: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    first = prepare_shards([mt_root], out, SENSORS, tiles_per_shard=3, max_shards=2)
    assert first.written == 2 and not (out / "tiles.parquet").exists()
    with pytest.raises(ValueError, match="incomplete"):
        ShardStore(out)
    second = prepare_shards([mt_root], out, SENSORS, tiles_per_shard=3)
    assert second.written == 5
    assert prepare_shards([mt_root], out, SENSORS, tiles_per_shard=3).written == 0
    a, b = ShardStore(out), ShardStore(store)
    for row in (0, 7, 19):
        x, xv = a.read(row, SENSORS, (0, 0, 24, 24))
        y, yv = b.read(row, SENSORS, (0, 0, 24, 24))
        assert _same_reads(x, y) and np.array_equal(xv, yv)
    with pytest.raises(ValueError, match="other sources or settings"):
        prepare_shards([mt_root], out, ["s1"], tiles_per_shard=3)
    with pytest.raises(ValueError, match="not a shard store"):  # e.g. the source root itself
        prepare_shards([mt_root], mt_root, SENSORS)
    assert (mt_root / "S2L2A" / "metadata.parquet").exists()


@pytest.mark.slow
def test_worker_processes_write_the_same_store(mt_root: Path, store: Path, tmp_path: Path) -> None:
    report = prepare_shards([mt_root], tmp_path / "p", SENSORS, tiles_per_shard=3, workers=2)
    assert report.written == 7
    a, b = ShardStore(tmp_path / "p"), ShardStore(store)
    for row in range(20):
        x, xv = a.read(row, SENSORS, (0, 0, 24, 24))
        y, yv = b.read(row, SENSORS, (0, 0, 24, 24))
        assert _same_reads(x, y) and np.array_equal(xv, yv)


def test_corrupt_row_is_skipped_counted_and_named(tmp_path: Path) -> None:
    root = make_root(
        tmp_path / "mt", ["1U_1R", "1U_2R", "2U_1R"], size=32, products=("S2L2A", "S1RTC")
    )
    rewrite_image_file(
        root / "S1RTC" / "images" / "part_00000.parquet",
        lambda i, r: {**r, "vh": b"II*\x00garbage" if i == 2 else r["vh"]},
    )
    sensors = ["s1", "s2_l2a"]
    report = prepare_shards([root], tmp_path / "store", sensors, tiles_per_shard=4)
    assert report.skipped == {"corrupt_geotiff": 4}  # the four tiles of cell 2U_1R
    assert any("row group 2 cell 2U_1R tile 0 band vh" in m for m in report.messages)
    assert "corrupt_geotiff=4" in report.format()
    views = MultiCropConfig(global_size=16, local_size=16, n_local=1)
    kw = {"views": views, "seed": 0}
    parquet = build_pretrain_loader([root], sensors, 4, **kw)  # type: ignore[arg-type]
    shard = build_shard_loader(tmp_path / "store", sensors, 4, augment_device="cpu", **kw)  # type: ignore[arg-type]
    seen_p = [i for b in parquet for i in b["index"].tolist()]
    seen_s = [i for b in shard for i in b["index"].tolist()]
    assert seen_p == seen_s
    bad = {i for i, r in enumerate(shard.dataset.tiles.refs) if r.name.startswith("2U_1R")}
    assert not set(seen_s) & bad
    assert shard.skip_log.counts == parquet.skip_log.counts
    assert shard.skip_log.counts["corrupt_geotiff"] >= 1

    def plain(messages: list[str]) -> list[str]:  # GDAL names the bytes with a random file name
        return [re.sub(r"[0-9a-f-]{36}\.tif", "X.tif", m) for m in messages]

    assert plain(shard.skip_log.messages) == plain(parquet.skip_log.messages)


def test_prepare_cli(mt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from terrafm.cli import main

    out = tmp_path / "cli"
    assert main(["prepare", str(mt_root), "--out", str(out), "--sensors", "s1", "s2_l2a"]) == 0
    text = capsys.readouterr().out
    assert "prepared 20 tiles in 2 shards" in text
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert attrs["complete"] and attrs["sensors"] == ["s1", "s2_l2a"]
    assert attrs["encodings"]["s1"] == {"scale": 1 / 256, "offset": -128.0, "dtype": "uint16"}
    assert [g["factor"] for g in attrs["layout"]["s2_l2a"]] == [1, 2, 6]
    grid = tmp_path / "grid"
    assert (
        main(["prepare", str(mt_root), "--out", str(grid), "--sensors", "s2_l2a", "--grid-10m"])
        == 0
    )
    attrs = json.loads((grid / "zarr.json").read_text())["attributes"]
    assert attrs["layout"]["s2_l2a"] == [
        {"array": "s2_l2a", "factor": 1, "halo": 0, "bands": list(range(12))}
    ]


def test_store_errors_name_what_is_wrong(mt_root: Path, tmp_path: Path) -> None:
    from terrafm.data.batch_multicrop import resolve_device

    prepare_shards([mt_root], tmp_path / "s1only", ["s1"], tiles_per_shard=20)
    with pytest.raises(ValueError, match=r"s1only has no \['s2_l1c'\] \(it holds \['s1'\]\)"):
        build_shard_dataset(tmp_path / "s1only", ["s1", "s2_l1c"])
    with pytest.raises(ShardError, match="no shard store"):
        ShardStore(tmp_path / "nowhere")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="augment device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_one_any_sensor_store_serves_both_pairings(tmp_path: Path) -> None:
    cells, sensors = ["1U_1R", "1U_2R", "2U_1R"], ["s1", "s2_l2a"]
    root = make_root(tmp_path, cells, size=32, products=("S2L2A",))
    make_root(tmp_path, cells[:2], size=32, products=("S1RTC",))  # S1 lacks 2U_1R
    out = tmp_path / "store"
    prepare_shards(
        [root], out, sensors, curation=CurationConfig(require_all=False), tiles_per_shard=4
    )
    assert [len(gs) for gs in ShardStore(out).layout.values()] == [1, 1]  # on the 10 m grid
    views = MultiCropConfig(global_size=16, local_size=16, n_local=1)
    augment = BatchMultiCrop(views, sensors, ENCODINGS, "cpu")
    for require_all, n_tiles in ((True, 8), (False, 12)):
        cur = CurationConfig(require_all=require_all)
        ref = build_pretrain_dataset([root], sensors, views=views, curation=cur, seed=2)
        got = build_shard_dataset(out, sensors, views=views, curation=cur, seed=2)
        assert len(ref) == len(got) == n_tiles
        keys = [(i, 0, i) for i in range(n_tiles)]
        a = collate_views([ref[k] for k in keys], sensors)
        b = augment(collate_raw([got[k] for k in keys], sensors))
        assert torch.equal(a["index"], b["index"])
        for va, vb in zip(a["student_local"] + a["teacher"], b["student_local"] + b["teacher"]):
            for s in sensors:
                assert torch.equal(va["masks"][s], vb["masks"][s])
                bound = _bound(s, native=False)  # 16 px tiles are not whole 60 m pixels
                assert (va["inputs"][s] - vb["inputs"][s]).abs().max() <= bound


def test_store_read_through_an_fsspec_url(store: Path) -> None:
    # An object store as fsspec sees it: the store uploaded to the in-memory filesystem.
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(store), "/shards-test-bucket/store", recursive=True)
    try:
        remote = build_shard_dataset("memory://shards-test-bucket/store", SENSORS, views=VIEWS)
        local = build_shard_dataset(store, SENSORS, views=VIEWS)
        for key in [(3, 0, 1), (17, 1, 5)]:
            a, b = remote[key], local[key]
            assert a["plan"] == b["plan"] and a["index"] == b["index"]
            assert _same_reads(a["raw"], b["raw"])
            assert all(np.array_equal(a["valid"][s], b["valid"][s]) for s in b["valid"])
    finally:
        fs.rm("/shards-test-bucket", recursive=True)


def test_real_sen1floods11_chip_round_trip(real_data: Path, tmp_path: Path) -> None:
    from terrafm.data.folder import GeoTiffFolderSource, RasterScene

    chip = real_data / "sen1floods11-sample"
    files = {
        "s2_l1c": sorted(str(p) for p in (chip / "S2").glob("*.tif")),
        "s1": sorted(str(p) for p in (chip / "S1").glob("*.tif")),
    }
    sensors = ["s1", "s2_l1c"]

    def source() -> GeoTiffFolderSource:
        scene = RasterScene("Spain", files, s1_unit="dB")
        return GeoTiffFolderSource([scene], sensors, tile_size=256)

    cur = CurationConfig(tile_size=256)
    report = prepare_shards([source()], tmp_path / "s", sensors, curation=cur)
    assert report.tiles == 4 and not report.skipped  # 512 px chip -> four 256 px tiles
    views = MultiCropConfig(global_size=64, local_size=32, n_local=2)
    ref = build_pretrain_dataset([source()], sensors, views=views, curation=cur, seed=1)
    got = build_shard_dataset(tmp_path / "s", sensors, views=views, curation=cur, seed=1)
    keys = [(i, 0, i) for i in range(4)]
    a = collate_views([ref[k] for k in keys], sensors)
    b = BatchMultiCrop(views, sensors, ENCODINGS)(collate_raw([got[k] for k in keys], sensors))
    for va, vb in zip(a["teacher"] + a["student_local"], b["teacher"] + b["student_local"]):
        for s in sensors:
            assert torch.equal(va["masks"][s], vb["masks"][s])
            assert (va["inputs"][s] - vb["inputs"][s]).abs().max() <= _bound(s, native=False)


def test_lz4hc_store_reads_the_same_values(mt_root: Path, store: Path, tmp_path: Path) -> None:
    prepare_shards([mt_root], tmp_path / "lz", SENSORS, tiles_per_shard=3, codec="lz4hc")
    ref, got, via_zarr = (
        ShardStore(store),
        ShardStore(tmp_path / "lz"),
        ShardStore(tmp_path / "lz", direct=False),
    )
    assert got.attrs["codec"] == "lz4hc" and ref.attrs["codec"] == "zstd"
    full = (0, 0, ref.tile_size, ref.tile_size)
    for row in (0, 7, 19):
        want, want_v = ref.read(row, SENSORS, full)
        for st in (got, via_zarr):
            data, valid = st.read(row, SENSORS, full)
            np.testing.assert_array_equal(valid, want_v)
            assert _same_reads(data, want)
    with pytest.raises(ShardError, match="codec 'lz4hc', not 'zstd'"):  # resuming: same codec
        prepare_shards([mt_root], tmp_path / "lz", SENSORS, tiles_per_shard=3)
    with pytest.raises(ShardError, match="codec must be one of"):
        prepare_shards([mt_root], tmp_path / "other", SENSORS, codec="gzip")


def _band_with_holes(product: str, band: str, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Like the fixture's bands, with no-data (S2: 0) and NaN (S1) corners."""
    from fake_majortom import random_band

    a = random_band(product, band, cell, rng)
    if band != "cloud_mask":
        k = max(1, a.shape[0] // 5)
        if product == "S1RTC":
            a[-k:, -k:] = np.nan
        else:
            a[:k, :k] = 0
    return a


@pytest.mark.parametrize("resize", ["taps", "matmul"])
def test_views_with_invalid_pixels_equal_the_parquet_path(tmp_path: Path, resize: str) -> None:
    # invalid pixels are 0 (the sensor mean) in the views of both paths; the CPU path writes the
    # stored value of the mean into them before resizing
    root = make_root(tmp_path / "mt", ("1U_1R", "2U_1R"), size=48, band_fn=_band_with_holes)
    prepare_shards([root], tmp_path / "s", SENSORS, tiles_per_shard=4)
    ref = build_pretrain_dataset([root], SENSORS, views=VIEWS, seed=5)
    shards = build_shard_dataset(tmp_path / "s", SENSORS, views=VIEWS, seed=5)
    assert len(ref) == len(shards) == 8
    invalid = [
        int((~shards[(i, 0, i)]["valid"][s]).sum())
        for i in range(8)
        for s in shards[(i, 0, i)]["valid"]
    ]
    assert sum(invalid) > 0  # the holes reach the read windows
    augment = BatchMultiCrop(VIEWS, SENSORS, ENCODINGS, "cpu", resize=resize)
    keys = [(i, 0, i) for i in range(8)]
    a = collate_views([ref[k] for k in keys], SENSORS)
    items = [shards[k] for k in keys]
    _compare(a, augment(collate_raw(items, SENSORS)))
    if resize == "taps":
        _compare(a, augment.from_samples(items))


def test_real_bigearthnet_views_from_native_shards(real_data: Path, tmp_path: Path) -> None:
    # Real L2A pixels (three BigEarthNet-MM patches: 120 px 10 m bands, 60 px 20 m, 20 px 60 m)
    # written as a Major-TOM product: the views from the native-resolution store equal the
    # parquet path's (resampled to 10 m, then to the view) to float rounding, the 20 m / 60 m
    # bands included; the 10 m-grid store differs by its rounding to whole DN.
    import rasterio

    from terrafm.data.majortom import MajorTomSample, write_product

    samples = []
    folder = real_data / "bigearthnet-mm-examples" / "BigEarthNet-S2-Example"
    for i, d in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())[:3]):
        bands = {}
        for f in sorted(d.glob("*_B*.tif")):
            with rasterio.open(f) as r:
                bands[f.stem.split("_")[-1]] = r.read(1)
        bands["cloud_mask"] = np.zeros((120, 120), np.uint8)  # no cloud
        samples.append(
            MajorTomSample(
                f"{i + 1}U_{i + 1}R",
                "S2A_MSIL2A_20170613T101031_N0205_R022_T34VER_20170613",
                datetime(2017, 6, 13),
                bands,
                "EPSG:32634",
                (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0),
                60.0,
                22.0,
                cloud_cover=0.0,
            )
        )
    write_product(tmp_path / "mt", "S2L2A", samples)
    sensors = ["s2_l2a"]
    prepare_shards([tmp_path / "mt"], tmp_path / "native", sensors)
    prepare_shards([tmp_path / "mt"], tmp_path / "grid", sensors, native=False)
    assert [g.factor for g in ShardStore(tmp_path / "native").layout["s2_l2a"]] == [1, 2, 6]
    views = MultiCropConfig(global_size=48, local_size=32, n_local=4)
    ref = build_pretrain_dataset([tmp_path / "mt"], sensors, views=views, seed=4)
    keys = [(i, 0, i) for i in range(len(ref))]
    a = collate_views([ref[k] for k in keys], sensors)
    for store, native in (("native", True), ("grid", False)):
        got = build_shard_dataset(tmp_path / store, sensors, views=views, seed=4)
        items = [got[k] for k in keys]
        for b in (
            BatchMultiCrop(views, sensors, ENCODINGS, "cpu").from_samples(items),
            BatchMultiCrop(views, sensors, ENCODINGS, "cpu", resize="matmul")(
                collate_raw(items, sensors)
            ),
        ):
            diff = max(
                (va["inputs"]["s2_l2a"] - vb["inputs"]["s2_l2a"]).abs().max().item()
                for key in ("teacher", "student_global", "student_local")
                for va, vb in zip(a[key], b[key])
            )
            assert diff <= _bound("s2_l2a", native), (store, diff)
            if not native:
                assert diff > 1e-4  # the 10 m grid's rounding shows on real pixels


def test_version_1_store_on_the_10m_grid_is_read_as_is(mt_root: Path, tmp_path: Path) -> None:
    # a store of version 1 (before native resolution): one array per sensor, every band on the
    # 10 m grid, no "layout" attribute; read as one 10 m group per sensor
    out = tmp_path / "v1"
    prepare_shards([mt_root], out, SENSORS, tiles_per_shard=5, native=False)
    meta = json.loads((out / "zarr.json").read_text())
    del meta["attributes"]["layout"]
    meta["attributes"]["version"] = 1
    (out / "zarr.json").write_text(json.dumps(meta))
    st = ShardStore(out)
    assert all(len(st.layout[s]) == 1 and st.layout[s][0].array == s for s in SENSORS)
    ref = build_pretrain_dataset([mt_root], SENSORS, views=VIEWS, seed=6)
    got = build_shard_dataset(out, SENSORS, views=VIEWS, seed=6)
    keys = [(i, 0, i) for i in range(0, 20, 3)]
    a = collate_views([ref[k] for k in keys], SENSORS)
    b = BatchMultiCrop(VIEWS, SENSORS, ENCODINGS, "cpu").from_samples([got[k] for k in keys])
    for key in ("teacher", "student_global", "student_local"):
        for va, vb in zip(a[key], b[key]):
            for s in SENSORS:
                assert (va["inputs"][s] - vb["inputs"][s]).abs().max() <= _bound(s, native=False)


def test_batch_multicrop_names_its_resize_forms() -> None:
    assert BatchMultiCrop(VIEWS, SENSORS, ENCODINGS, "cpu").resize == "taps"
    assert BatchMultiCrop(VIEWS, SENSORS, ENCODINGS, "cpu", resize="matmul").resize == "matmul"
    with pytest.raises(ValueError, match="'matmul', 'taps' or 'auto'"):
        BatchMultiCrop(VIEWS, SENSORS, ENCODINGS, "cpu", resize="interpolate")
