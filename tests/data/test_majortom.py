"""Major-TOM writer/reader: exact layout, lazy row-group reads, resampling, units, tiling."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from fake_majortom import TRANSFORM, make_root, make_sample

from terrafm.data.majortom import (
    MajorTomProduct,
    native_size,
    parse_grid_cell,
    write_product,
)
from terrafm.data.skips import SampleError
from terrafm.io.geotiff import decode_geotiff, repair_crs

S2_COLS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def test_image_columns_and_one_row_group_per_sample(mt_root: Path) -> None:
    expect = {
        "S2L2A": [*S2_COLS, "cloud_mask"],
        "S2L1C": [*S2_COLS[:10], "B10", *S2_COLS[10:], "cloud_mask"],
        "S1RTC": ["vv", "vh"],
    }
    for product, bands in expect.items():
        files = sorted((mt_root / product / "images").glob("part_*.parquet"))
        assert [f.name for f in files] == ["part_00000.parquet", "part_00001.parquet"]
        pf = pq.ParquetFile(files[0])
        assert pf.schema_arrow.names == [
            "product_id",
            "grid_cell",
            "product_datetime",
            "thumbnail",
            *bands,
        ]
        assert pf.metadata.num_rows == pf.num_row_groups == 3  # rows_per_file=3, one row group each
        assert pq.ParquetFile(files[1]).num_row_groups == 2


def test_metadata_columns(mt_root: Path) -> None:
    s2 = pq.read_table(mt_root / "S2L2A" / "metadata.parquet")
    s1 = pq.read_table(mt_root / "S1RTC" / "metadata.parquet")
    assert s2.column_names == [
        "grid_cell",
        "grid_row_u",
        "grid_col_r",
        "product_id",
        "timestamp",
        "cloud_cover",
        "nodata",
        "centre_lat",
        "centre_lon",
        "crs",
        "parquet_url",
        "parquet_row",
    ]
    assert "cloud_cover" not in s1.column_names and "orbit_state" in s1.column_names
    d = s2.to_pydict()
    i = d["grid_cell"].index("3D_4L")
    assert (d["grid_row_u"][i], d["grid_col_r"][i]) == (-3, -4)
    assert (d["parquet_url"][i], d["parquet_row"][i]) == ("images/part_00001.parquet", 0)
    assert d["crs"][i] == "EPSG:EPSG:32633"  # written as the real rows carry it
    assert parse_grid_cell("282D_485L") == (-282, -485)
    with pytest.raises(ValueError, match="malformed"):
        parse_grid_cell("282X_485L")


def test_native_resolutions_crs_and_transforms(mt_root: Path) -> None:
    pf = pq.ParquetFile(mt_root / "S2L1C" / "images" / "part_00000.parquet")
    row = pf.read_row_group(0).to_pylist()[0]
    sizes = {
        b: decode_geotiff(row[b]).data.shape for b in ("B02", "B05", "B01", "B10", "cloud_mask")
    }
    assert sizes == {
        "B02": (1, 48, 48),
        "B05": (1, 24, 24),
        "B01": (1, 8, 8),
        "B10": (1, 8, 8),
        "cloud_mask": (1, 48, 48),
    }
    b05 = decode_geotiff(row["B05"])
    assert b05.crs == "EPSG:32633"  # the GeoTIFFs carry the repaired CRS
    assert (
        b05.transform[0] == 20.0 and b05.transform[4] == -20.0 and b05.transform[2] == TRANSFORM[2]
    )
    assert row["thumbnail"][:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        native_size("B01", 1068) == 178
        and native_size("B05", 1068) == 534
        and native_size("vv", 1068) == 1068
    )


def test_round_trip_and_crs_repair(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = [make_sample("S2L2A", c, 36, rng) for c in ("1U_1R", "1D_1L")]
    write_product(tmp_path, "S2L2A", samples, rows_per_file=1)
    prod = MajorTomProduct(tmp_path / "S2L2A")
    assert list(prod.metadata["crs"]) == ["EPSG:32633", "EPSG:32633"]
    assert (
        repair_crs("EPSG:EPSG:4326") == "EPSG:4326" and repair_crs(" epsg:32633 ") == "EPSG:32633"
    )
    cell = prod.read_cell(1)
    for band, arr in samples[1].bands.items():
        np.testing.assert_array_equal(cell[band].data[0], arr)
        assert cell[band].data.dtype == arr.dtype


def test_writer_rejects_bad_samples(tmp_path: Path) -> None:
    s = make_sample("S2L2A", "1U_1R", 24, np.random.default_rng(0))
    del s.bands["B05"]
    with pytest.raises(ValueError, match=r"missing band columns \['B05'\]"):
        write_product(tmp_path, "S2L2A", [s])
    with pytest.raises(ValueError, match="unknown Major-TOM product"):
        write_product(tmp_path, "S3OLCI", [])


def test_reads_one_row_group_and_only_needed_columns(
    mt_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, tuple[str, ...]]] = []
    real = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, i: int, columns: list[str] | None = None, **kw: object) -> object:
        calls.append((i, tuple(columns or ())))
        return real(self, i, columns=columns, **kw)

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("a whole parquet file was read")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", forbidden)
    prod = MajorTomProduct(mt_root / "S2L1C")
    i = list(prod.metadata["grid_cell"]).index("5U_6L")
    tile, cell = prod.read_tile(i, 2)
    assert len(calls) == 1 and calls[0][0] == 1  # 5U_6L is row group 1 of part_00001
    assert "B10" not in calls[0][1] and "thumbnail" not in calls[0][1]  # L1C B10 is never read
    assert tile.data.shape == (12, 24, 24) and cell == 48


def test_fsspec_url_matches_local(mt_root: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.put(str(mt_root / "S1RTC"), "/mt/S1RTC", recursive=True)
    remote = MajorTomProduct("memory://mt/S1RTC")
    local = MajorTomProduct(mt_root / "S1RTC")
    a, _ = remote.read_tile(4, 1)
    b, _ = local.read_tile(4, 1)
    np.testing.assert_array_equal(a.data, b.data)


def test_resampling_matches_plain_bilinear(mt_root: Path) -> None:
    prod = MajorTomProduct(mt_root / "S2L2A")
    raw = prod.read_cell(2)
    for tile in range(4):
        t, _ = prod.read_tile(2, tile)
        r0, c0 = (tile // 2) * 24, (tile % 2) * 24
        for k, band in enumerate(S2_COLS):
            full = torch.from_numpy(raw[band].data.astype(np.float32))[None]  # (1, 1, n, n)
            ref = F.interpolate(full, size=(48, 48), mode="bilinear", align_corners=False)[0, 0]
            np.testing.assert_allclose(
                t.data[k], ref[r0 : r0 + 24, c0 : c0 + 24].numpy(), rtol=1e-5, atol=1e-3
            )


def test_bilinear_reproduces_a_linear_ramp() -> None:
    """Coarse pixels sampled from a plane resample to the same plane at fine pixel centres."""
    from terrafm.io.resample import resample_to

    n, s = 16, 96
    centres_c = (np.arange(n) + 0.5) * (s / n)  # coarse pixel centres in fine-pixel units
    coarse = np.add.outer(2.0 * centres_c, 0.5 * centres_c)
    fine = resample_to(coarse[None], (s, s))[0]
    centres_f = np.arange(s) + 0.5
    plane = np.add.outer(2.0 * centres_f, 0.5 * centres_f)
    inner = slice(s // n, s - s // n)  # edges clamp to the outermost coarse centre
    np.testing.assert_allclose(fine[inner, inner], plane[inner, inner], rtol=1e-5)


def test_s1_is_converted_to_db(mt_root: Path) -> None:
    prod = MajorTomProduct(mt_root / "S1RTC")
    raw = prod.read_cell(0)
    t, _ = prod.read_tile(0, 3)
    expect = 10 * np.log10(raw["vh"].data[0][24:, 24:].astype(np.float64))
    np.testing.assert_allclose(t.data[1], expect, atol=1e-4)


@pytest.mark.parametrize(
    ("product", "baseline", "offset"),
    [("S2L2A", "N0400", 1000), ("S2L1C", "N0509", 1000), ("S2L2A", "N0213", 0)],
)
def test_processing_baseline_offset(
    tmp_path: Path, product: str, baseline: str, offset: int
) -> None:
    pid = f"S2B_MSI{product[2:]}_20230101T100000_{baseline}_R022_T33UUU_20230101T120000"
    s = make_sample(product, "1U_1R", 24, np.random.default_rng(0), product_id=pid)
    write_product(tmp_path, product, [s])
    t, _ = MajorTomProduct(tmp_path / product).read_tile(0, 0)
    np.testing.assert_allclose(t.data[1], s.bands["B02"][:12, :12].astype(np.float32) - offset)


def test_real_size_cell_splits_into_534_tiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lin = rng.uniform(0.01, 0.5, (1068, 1068)).astype(np.float32)
    s = make_sample("S1RTC", "1U_1R", 1068, rng, band_fn=lambda p, b, n, r: lin)
    write_product(tmp_path, "S1RTC", [s])
    prod = MajorTomProduct(tmp_path / "S1RTC")
    for tile, (r0, c0) in enumerate([(0, 0), (0, 534), (534, 0), (534, 534)]):
        t, cell = prod.read_tile(0, tile)
        assert cell == 1068 and t.data.shape == (2, 534, 534)
        np.testing.assert_allclose(
            t.data[0], 10 * np.log10(lin[r0 : r0 + 534, c0 : c0 + 534]), atol=1e-4
        )


def test_cloud_mask_pixels_are_invalid(tmp_path: Path) -> None:
    def band_fn(product: str, band: str, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.full((native_size(band, n),) * 2, 1500, np.uint16)
        if band == "cloud_mask":
            out = np.zeros((n, n), np.uint8)
            out[:6, :] = 1  # top quarter of tile 0 is cloud
        return out

    write_product(
        tmp_path, "S2L2A", [make_sample("S2L2A", "1U_1R", 48, np.random.default_rng(0), band_fn)]
    )
    prod = MajorTomProduct(tmp_path / "S2L2A")
    t, _ = prod.read_tile(0, 0)
    assert not t.valid[:6].any() and t.valid[6:].all()
    t, _ = prod.read_tile(0, 0, mask_clouds=False)
    assert t.valid.all()


def test_product_name_from_folder_and_errors(tmp_path: Path) -> None:
    make_root(tmp_path, ["1U_1R"], size=24, products=("S1RTC",))
    (tmp_path / "S1RTC").rename(tmp_path / "Core-S1RTC")
    assert MajorTomProduct(tmp_path / "Core-S1RTC").spec.name == "S1RTC"
    with pytest.raises(FileNotFoundError, match="metadata"):
        MajorTomProduct(tmp_path / "S2L2A")
    with pytest.raises(ValueError, match="cannot tell"):
        MajorTomProduct(tmp_path / "whatever")
    assert issubclass(SampleError, Exception)
