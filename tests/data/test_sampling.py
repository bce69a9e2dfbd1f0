"""Stratified sampler (determinism, rank shards, balance, resume), curation and land cover."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fake_majortom import TRANSFORM, make_root

from terrafm.data.curation import curate, keep_fraction
from terrafm.data.landcover import WORLDCOVER_CLASSES, LandCover, is_ocean, landcover_from_map
from terrafm.data.sampling import StratifiedSampler, stratum_weights
from terrafm.data.sources import MajorTomSource
from terrafm.data.tiles import CellInfo
from terrafm.io.geotiff import encode_geotiff

STRATA = ["forest"] * 90 + ["urban"] * 9 + ["snow"]


def _indices(sampler: StratifiedSampler) -> list[int]:
    return [k[0] for k in sampler]


def test_deterministic_by_seed_and_epoch() -> None:
    a, b = StratifiedSampler(STRATA, seed=7), StratifiedSampler(STRATA, seed=7)
    assert _indices(a) == _indices(b)
    b.set_epoch(1)
    assert _indices(a) != _indices(b)
    assert _indices(StratifiedSampler(STRATA, seed=8)) != _indices(a)
    keys = list(a)
    assert [k[2] for k in keys] == list(range(100)) and {k[1] for k in keys} == {0}


@pytest.mark.parametrize("replacement", [True, False])
def test_rank_shards_partition_the_epoch(replacement: bool) -> None:
    world = [
        StratifiedSampler(STRATA, 99, seed=3, rank=r, world_size=3, replacement=replacement)
        for r in range(3)
    ]
    for s in world:
        s.set_epoch(2)
    keys = [list(s) for s in world]
    assert [len(k) for k in keys] == [33, 33, 33]
    positions = [p for k in keys for _, _, p in k]
    assert sorted(positions) == list(range(99))  # disjoint positions covering the global stream
    stream = world[0].global_stream(2)
    for k in keys:
        assert all(stream[p] == i for i, _, p in k)
    if not replacement:
        sets = [{i for i, _, _ in k} for k in keys]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_inverse_stratum_frequency_balances_strata() -> None:
    w = stratum_weights(STRATA)
    np.testing.assert_allclose([w[:90].sum(), w[90:99].sum(), w[99]], [1 / 3] * 3)
    drawn = Counter(STRATA[i] for i in StratifiedSampler(STRATA, 30000, seed=0).global_stream(0))
    for name in ("forest", "urban", "snow"):
        assert abs(drawn[name] / 30000 - 1 / 3) < 0.02
    uniform = Counter(
        STRATA[i] for i in StratifiedSampler(STRATA, 30000, balance=0.0).global_stream(0)
    )
    assert abs(uniform["forest"] / 30000 - 0.9) < 0.02


def test_resume_mid_epoch_yields_the_same_rest() -> None:
    full = StratifiedSampler(STRATA, seed=1, rank=1, world_size=2)
    full.set_epoch(4)
    expected = list(full)
    run = StratifiedSampler(STRATA, seed=1, rank=1, world_size=2)
    run.set_epoch(4)
    it = iter(run)
    head = [next(it) for _ in range(17)]
    state = run.state_dict()
    assert state["position"] == 17 and state["epoch"] == 4
    resumed = StratifiedSampler(STRATA, seed=1, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # the training loop calls it again: must not rewind
    assert head + list(resumed) == expected
    assert list(resumed) == expected  # the next pass of that epoch starts from the beginning
    with pytest.raises(ValueError, match="world_size"):
        StratifiedSampler(STRATA, seed=1, rank=0, world_size=4).load_state_dict(state)


def test_sampler_argument_errors() -> None:
    with pytest.raises(ValueError, match="exceed"):
        StratifiedSampler(STRATA, 101, replacement=False)
    with pytest.raises(ValueError, match="rank"):
        StratifiedSampler(STRATA, rank=2, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        StratifiedSampler([])


def _lc(name: str, cls: int, water: float = 0.0, region: str = "europe") -> LandCover:
    """Water share ``water``, the rest tree cover (10), dominant class ``cls``."""
    hist = [0.0] * len(WORLDCOVER_CLASSES)
    hist[WORLDCOVER_CLASSES.index(80)] = water
    hist[WORLDCOVER_CLASSES.index(10)] += 1.0 - water
    return LandCover(name, cls, tuple(hist), "Cfb", region)


def test_ocean_definition_and_keep_fraction() -> None:
    assert is_ocean(_lc("a", 80, water=1.0))
    assert not is_ocean(_lc("lake", 80, water=0.9))  # water-dominated but with land: kept as is
    assert not is_ocean(_lc("coast", 30, water=0.4))
    assert is_ocean(_lc("flagged", 30, region="ocean"))
    cells = [CellInfo(f"{i}U_1R", ("s1",), 4, _lc(f"{i}U_1R", 80, water=1.0)) for i in range(2000)]
    cells.append(CellInfo("land", ("s1",), 4, _lc("land", 10)))
    refs, report = curate([cells], ocean_keep=0.02, seed=0)
    kept = report["ocean_cells"] - report["ocean_cells_dropped"]
    assert report["ocean_cells"] == 2000 and 20 <= kept <= 60  # ~2 %
    assert len(refs) == 4 * (kept + 1) and refs[-1].stratum == (10, "Cfb", "europe")
    again, _ = curate([list(reversed(cells))], ocean_keep=0.02, seed=0)
    assert {r.name for r in again} == {r.name for r in refs}  # per-cell, order independent
    assert keep_fraction("x", 1.0, 0) and not any(keep_fraction(f"{i}", 0.0, 0) for i in range(100))


def test_landcover_table_and_worldcover_raster(tmp_path: Path) -> None:
    make_root(
        tmp_path,
        ["1U_1R", "1U_2R"],
        size=24,
        products=("S1RTC",),
        landcover={"1U_1R": 10, "1U_2R": 40},
    )
    cmap = np.full((24, 24), 30, np.uint8)
    cmap[:12, 12:] = 50  # tile 1 is built-up
    cmap[12:, :12] = 80  # tile 2 is water
    (tmp_path / "worldcover").mkdir()
    (tmp_path / "worldcover" / "1U_2R.tif").write_bytes(
        encode_geotiff(cmap, "EPSG:32633", TRANSFORM)
    )
    src = MajorTomSource(tmp_path, ["s1"])
    a, b = src.cells()
    assert a.landcover is not None and a.landcover.dominant == 10 and a.tile_classes is None
    assert [a.tile_class(t) for t in range(4)] == [10] * 4
    assert b.landcover is not None and b.landcover.climate_zone == "Cfb"  # table facts kept
    assert b.tile_classes == (30, 50, 80, 30)
    lc = landcover_from_map("x", cmap)
    assert (
        lc.dominant == 30
        and abs(sum(lc.hist) - 1) < 1e-9
        and lc.hist[WORLDCOVER_CLASSES.index(50)] == 0.25
    )


def test_tile_table_indexing() -> None:
    cells = [CellInfo("a", ("s1",), 4, _lc("a", 10)), CellInfo("b", ("s1",), 4, _lc("b", 30))]
    table, _ = curate([cells])
    assert len(table) == 8 and table[-1].name == "b/3" and table[5].landcover == 30
    assert [r.tile for r in table[2:6]] == [2, 3, 0, 1]
    with pytest.raises(IndexError):
        table[8]
    assert table.strata == [(10, "Cfb", "europe"), (30, "Cfb", "europe")]
    np.testing.assert_array_equal(stratum_weights(table.stratum_ids), [1 / 8] * 8)
