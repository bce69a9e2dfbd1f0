"""A known-bad tile hit again and again must not pile up tracebacks (and the rasters in them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_majortom import make_root, rewrite_image_file

from terrafm.data.loader import build_pretrain_dataset
from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.skips import SampleError


def test_known_bad_tile_keeps_no_frames(tmp_path: Path) -> None:
    root = make_root(tmp_path, ["1U_1R", "1U_2R"], size=32, products=("S2L2A",), rows_per_file=2)
    rewrite_image_file(
        root / "S2L2A" / "images" / "part_00000.parquet",
        lambda i, r: {**r, "B02": b"" if i == 0 else r["B02"]},
    )
    ds = build_pretrain_dataset(
        [root], ["s2_l2a"], views=MultiCropConfig(global_size=16, local_size=16, n_local=1)
    )
    bad = next(i for i, r in enumerate(ds.tiles.refs) if r.name.startswith("1U_1R"))
    depths = []
    for _ in range(4):
        with pytest.raises(SampleError, match="corrupt_geotiff") as e:
            ds._load(bad)
        tb, depth = e.value.__traceback__, 0
        while tb is not None:
            tb, depth = tb.tb_next, depth + 1
        depths.append(depth)
    stored = ds._bad[bad]
    assert stored.__traceback__ is None and stored.reason == "corrupt_geotiff"
    assert stored is not e.value
    # Re-raising never chains earlier frames onto one ever-growing traceback.
    assert depths[1] == depths[2] == depths[3]
