"""Bad input never reaches the model: skipped with a reason and counted, or fail-fast errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fake_majortom import make_root, random_band, rewrite_image_file

from terrafm.data.loader import CurationConfig, QualityConfig, build_pretrain_loader
from terrafm.data.majortom import MajorTomProduct, native_size
from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.skips import SampleError, SkipLog
from terrafm.data.sources import MajorTomSource

SENSORS = ("s1", "s2_l2a")
VIEWS = MultiCropConfig(global_size=16, local_size=16, n_local=1)
CELLS = ["1U_1R", "1U_2R", "2U_1R"]


def _root(tmp_path: Path, band_fn=random_band) -> Path:  # type: ignore[no-untyped-def]
    return make_root(
        tmp_path, CELLS, size=32, products=("S2L2A", "S1RTC"), band_fn=band_fn, rows_per_file=3
    )


def _loader(root: Path, fail_fast: bool = False, **kw: object):  # type: ignore[no-untyped-def]
    return build_pretrain_loader(
        [root],
        SENSORS,
        4,
        views=VIEWS,
        quality=QualityConfig(fail_fast=fail_fast),
        seed=0,
        **kw,  # type: ignore[arg-type]
    )


def _run_epoch(loader) -> list[int]:  # type: ignore[no-untyped-def]
    seen = []
    for batch in loader:
        for view in batch["teacher"] + batch["student_local"]:
            for x in view["inputs"].values():
                assert torch.isfinite(x).all()
        seen += batch["index"].tolist()
    return seen


def _bad_cell_indices(loader, cell: str) -> set[int]:  # type: ignore[no-untyped-def]
    return {i for i, r in enumerate(loader.dataset.tiles.refs) if r.name.startswith(cell)}


def test_corrupt_row_group_is_skipped_and_named(tmp_path: Path) -> None:
    root = _root(tmp_path)
    f = root / "S2L2A" / "images" / "part_00000.parquet"
    meta = pq.ParquetFile(f).metadata
    col = meta.row_group(1).column(pq.ParquetFile(f).schema_arrow.names.index("B02"))
    data = bytearray(f.read_bytes())
    start = col.data_page_offset
    data[start : start + 48] = b"\xff" * 48  # smash the page header of row group 1's B02 chunk
    f.write_bytes(bytes(data))
    prod = MajorTomProduct(root / "S2L2A")
    with pytest.raises(SampleError) as e:
        prod.read_tile(1, 0)
    assert e.value.reason == "corrupt_row_group"
    assert "part_00000.parquet row group 1" in str(e.value)
    loader = _loader(root)
    seen = _run_epoch(loader)
    assert not set(seen) & _bad_cell_indices(loader, "1U_2R")
    assert loader.skip_log.total >= 1 and len(seen) == 12


def test_corrupt_geotiff_bytes(tmp_path: Path) -> None:
    root = _root(tmp_path)
    rewrite_image_file(
        root / "S1RTC" / "images" / "part_00000.parquet",
        lambda i, r: {**r, "vh": b"II*\x00garbage" if i == 2 else r["vh"]},
    )
    with pytest.raises(
        SampleError, match=r"row group 2 cell 2U_1R tile 0 band vh.*corrupt_geotiff"
    ):
        MajorTomProduct(root / "S1RTC").read_tile(2, 0)
    loader = _loader(root)
    seen = _run_epoch(loader)
    assert not set(seen) & _bad_cell_indices(loader, "2U_1R")
    assert loader.skip_log.counts["corrupt_geotiff"] >= 1


def test_missing_band_column(tmp_path: Path) -> None:
    root = _root(tmp_path)
    rewrite_image_file(
        root / "S2L2A" / "images" / "part_00000.parquet",
        lambda i, r: {k: v for k, v in r.items() if k != "B05"},
    )
    with pytest.raises(SampleError, match=r"missing band columns \['B05'\]") as e:
        MajorTomProduct(root / "S2L2A").read_tile(0, 0)
    assert "part_00000.parquet row group 0" in str(e.value)
    with pytest.raises(RuntimeError, match="consecutive unusable tiles"):  # every S2 tile is bad
        _run_epoch(_loader(root))


def test_fail_fast_names_file_and_row_group(tmp_path: Path) -> None:
    root = _root(tmp_path)
    rewrite_image_file(
        root / "S1RTC" / "images" / "part_00000.parquet",
        lambda i, r: {**r, "vv": b"" if i == 0 else r["vv"]},
    )
    loader = _loader(root, fail_fast=True)
    with pytest.raises(SampleError, match=r"S1RTC .*part_00000.parquet row group 0 cell 1U_1R"):
        _run_epoch(loader)


def test_cell_missing_a_sensor(tmp_path: Path) -> None:
    root = make_root(tmp_path, CELLS, size=32, products=("S2L2A",))
    make_root(tmp_path, CELLS[:2], size=32, products=("S1RTC",))  # S1 lacks 2U_1R
    src = MajorTomSource(root, SENSORS)
    assert [c.name for c in src.cells()] == CELLS[:2] and src.report["cells_missing_sensor"] == 1
    loader = _loader(root, curation=CurationConfig(require_all=False))
    names = {r.name.split("/")[0]: r.sensors for r in loader.dataset.tiles.refs}
    assert names["2U_1R"] == ("s2_l2a",)
    for batch in loader:
        for view in batch["teacher"] + batch["student_global"] + batch["student_local"]:
            masks = view["masks"]
            assert (masks["s1"] | masks["s2_l2a"]).all()
            for k, idx in enumerate(batch["index"].tolist()):
                if loader.dataset.tiles.refs[idx].name.startswith("2U_1R"):
                    assert not masks["s1"][k] and masks["s2_l2a"][k]
                    assert (view["inputs"]["s1"][k] == 0).all()


def test_metadata_pointing_at_the_wrong_row_group(tmp_path: Path) -> None:
    root = _root(tmp_path)
    meta = pq.read_table(root / "S1RTC" / "metadata.parquet").to_pandas()
    meta.loc[0, "parquet_row"] = 1
    meta.to_parquet(root / "S1RTC" / "metadata.parquet")
    with pytest.raises(SampleError, match="holds cell '1U_2R', metadata says '1U_1R'"):
        MajorTomProduct(root / "S1RTC").read_tile(0, 0)


def _with_hole(value: float, where: tuple[slice, slice], products: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def band_fn(product: str, band: str, n: int, rng: np.random.Generator) -> np.ndarray:
        arr = random_band(product, band, n, rng)
        if product in products and band != "cloud_mask" and native_size(band, n) == n:
            arr = arr.astype(np.float32) if product == "S1RTC" else arr
            arr[where] = value
        return arr

    return band_fn


def test_all_nodata_tile(tmp_path: Path) -> None:
    root = _root(
        tmp_path, _with_hole(0, (slice(0, 16), slice(0, 16)), ("S2L2A",))
    )  # tile 0 of every cell
    with pytest.raises(SampleError, match="all pixels no-data") as e:
        _loader(root, fail_fast=True).dataset.tiles.load(0)
    assert e.value.reason == "all_nodata"
    loader = _loader(root)
    seen = _run_epoch(loader)
    assert all(loader.dataset.tiles.refs[i].tile != 0 for i in seen)
    assert loader.skip_log.counts["all_nodata"] >= 1


def test_nans_masked_when_few_rejected_when_many(tmp_path: Path) -> None:
    few = _root(tmp_path / "few", _with_hole(np.nan, (slice(0, 2), slice(0, 16)), ("S1RTC",)))
    tiles = _loader(few).dataset.tiles
    inputs, dropped = tiles.load(0)
    assert not dropped and torch.isfinite(inputs["s1"]).all()
    assert (inputs["s1"][:, :2, :] == 0).all()  # NaN pixels set to the mean (0 after z-scoring)
    many = _root(tmp_path / "many", _with_hole(np.nan, (slice(0, 12), slice(0, 16)), ("S1RTC",)))
    with pytest.raises(SampleError, match=r"75% invalid pixels \(non-finite 75%\)") as e:
        _loader(many).dataset.tiles.load(0)
    assert e.value.reason == "too_invalid"


def test_skip_log_summary_and_state() -> None:
    log = SkipLog()
    log.add("all_nodata", "a", emit=False)
    log.extend([("corrupt_geotiff", "b"), ("all_nodata", "c")])
    assert log.total == 3 and log.summary() == "skipped 3 samples (all_nodata=2, corrupt_geotiff=1)"
    other = SkipLog()
    other.load_state_dict(log.state_dict())
    assert other.counts == log.counts
