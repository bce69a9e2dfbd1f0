"""The synthetic world on disk: Major-TOM layout (contract A), land cover, tasks (contract C),
determinism, held-out cells, and the make-world command."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from terrafm.cli import main
from terrafm.data.landcover import WORLDCOVER_CLASSES
from terrafm.data.majortom import PRODUCTS, MajorTomProduct
from terrafm.eval.datasets.folder import load_folder_task
from terrafm.world.cells import render_scene
from terrafm.world.generate import (
    WorldConfig,
    WorldError,
    load_manifest,
    make_world,
    plan_world,
    world_config,
)
from terrafm.world.landcover import CLASS_NAMES

# A tiny world: 48 px cells (20 m bands 24 px, 60 m bands 8 px), one held-out cell per class.
TINY = WorldConfig(
    cells=10,
    cell_size=48,
    seed=3,
    ocean_fraction=0.1,
    cloud_fraction=0.5,
    nodata_fraction=0.3,
    s1_missing=0.2,
    l1c_missing=0.1,
    malformed_crs=0.3,
    task_cells_per_class=1,
    cls_chip=16,
    seg_chip=32,
    rows_per_file=4,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    make_world(out, TINY)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_products_follow_the_majortom_layout(world: Path) -> None:
    manifest = load_manifest(world)
    assert manifest is not None
    for name, spec in PRODUCTS.items():
        meta = pq.read_table(world / name / "metadata.parquet")
        assert tuple(meta.column_names) == spec.metadata_columns
        assert meta.num_rows == manifest["products"][name]
        n_groups = 0
        for part in sorted((world / name / "images").glob("part_*.parquet")):
            f = pq.ParquetFile(part)
            assert tuple(f.schema_arrow.names) == spec.columns
            assert f.metadata.num_rows == f.num_row_groups  # one row group per sample
            n_groups += f.num_row_groups
        assert n_groups == meta.num_rows


def test_bands_read_back_at_native_resolution(world: Path) -> None:
    sizes = {10: 48, 20: 24, 60: 8}
    gsd = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20}
    gsd |= {"B12": 20}
    for name in PRODUCTS:
        product = MajorTomProduct(world / name)
        cell = product.read_cell(0)
        for band, raster in cell.items():
            side = sizes[gsd.get(band, 10)]
            assert raster.data.shape == (1, side, side), (name, band)
            assert raster.transform[0] == pytest.approx(10.0 * 48 / side)
            assert raster.crs is not None and raster.crs.startswith("EPSG:32")
        if name == "S1RTC":
            assert cell["vv"].data.dtype == np.float32
            valid = cell["vv"].data[cell["vv"].data > 0]
            assert 1e-4 < np.median(valid) < 1.0  # linear power, not dB
        else:
            assert cell["B02"].data.dtype == np.uint16
            assert cell["cloud_mask"].data.dtype == np.uint8
            assert set(np.unique(cell["cloud_mask"].data)) <= {0, 1}


def test_metadata_values(world: Path) -> None:
    meta = pq.read_table(world / "S2L2A" / "metadata.parquet").to_pandas()
    assert meta["grid_cell"].str.match(r"^\d+[UD]_\d+[LR]$").all()
    assert meta["product_id"].str.startswith(("S2A_MSIL2A_", "S2B_MSIL2A_")).all()
    assert meta["crs"].str.match(r"^(EPSG:)+32[67]\d\d$").all()
    assert (meta["crs"].str.count("EPSG") == 2).any()  # some rows carry the malformed CRS
    assert meta["cloud_cover"].between(0, 100).all() and (meta["cloud_cover"] > 0).any()
    assert meta["nodata"].between(0, 1).all() and (meta["nodata"] > 0).any()
    assert meta["centre_lat"].between(-90, 90).all() and meta["centre_lon"].between(-180, 180).all()
    s1 = pq.read_table(world / "S1RTC" / "metadata.parquet").to_pandas()
    assert set(s1["orbit_state"]) <= {"ascending", "descending"}
    assert set(s1["grid_cell"]) < set(meta["grid_cell"])  # some cells lack S1


def test_nodata_and_cloud_mask_agree_with_metadata(world: Path) -> None:
    product = MajorTomProduct(world / "S2L2A")
    meta = pq.read_table(world / "S2L2A" / "metadata.parquet").to_pandas()
    for i in range(len(product)):
        cell = product.read_cell(i)
        b02, mask = cell["B02"].data[0], cell["cloud_mask"].data[0]
        empty = b02 == 0
        assert empty.mean() == pytest.approx(meta["nodata"].iat[i], abs=1e-6)
        assert not mask[empty].any()
        valid_cover = 100 * mask[~empty].mean() if (~empty).any() else 0.0
        assert valid_cover == pytest.approx(meta["cloud_cover"].iat[i], abs=1e-2)
        if mask.any():  # clouds are bright in the visible
            assert b02[mask == 1].mean() > b02[(mask == 0) & ~empty].mean()


def test_landcover_table_matches_worldcover_rasters(world: Path) -> None:
    table = pq.read_table(world / "landcover.parquet").to_pandas()
    assert list(table.columns) == [
        "grid_cell",
        "worldcover_dominant",
        "worldcover_hist",
        "climate_zone",
        "region",
    ]
    cells = set(pq.read_table(world / "S2L2A" / "metadata.parquet").column("grid_cell").to_pylist())
    assert set(table["grid_cell"]) == cells
    assert "ocean" in set(table["region"])
    for row in table.itertuples():
        with rasterio.open(world / "worldcover" / f"{row.grid_cell}.tif") as src:
            codes = src.read(1)
            assert codes.shape == (48, 48) and src.transform.a == 10.0
        hist = np.array([(codes == c).mean() for c in WORLDCOVER_CLASSES])
        np.testing.assert_allclose(row.worldcover_hist, hist, atol=1e-9)
        assert row.worldcover_dominant == WORLDCOVER_CLASSES[int(np.argmax(hist))]


def test_heldout_cells_are_disjoint_from_pretraining(world: Path) -> None:
    manifest = load_manifest(world)
    assert manifest is not None
    pretrain = set(manifest["pretrain_cells"])
    heldout = set(manifest["heldout_cells"])
    assert len(heldout) == len(WORLDCOVER_CLASSES) and not pretrain & heldout
    for product in PRODUCTS:
        cells = set(
            pq.read_table(world / product / "metadata.parquet").column("grid_cell").to_pylist()
        )
        assert cells <= pretrain
    for task in ("landcover_cls", "landcover_seg"):
        with open(world / "tasks" / task / "samples.csv") as f:
            ids = [r["sample_id"] for r in csv.DictReader(f)]
        assert ids and {i.split("_y")[0] for i in ids} <= heldout


@pytest.mark.parametrize("name", ["landcover_cls", "landcover_seg"])
def test_task_folders_follow_contract_c(world: Path, name: str) -> None:
    root = world / "tasks" / name
    meta = json.loads((root / "task.json").read_text())
    assert meta["ignore_index"] == 255
    assert meta["sensors"]["s1"] == {"bands": ["VV", "VH"], "unit": "dB"}
    assert len(meta["sensors"]["s2_l2a"]["bands"]) == 12
    assert "B10" in meta["sensors"]["s2_l1c"]["bands"]
    task = load_folder_task(root)  # the evaluation reader checks names, bands and labels
    assert task.kind == ("classification" if name == "landcover_cls" else "segmentation")
    chip = TINY.cls_chip if name == "landcover_cls" else TINY.seg_chip
    k = len(task.classes)
    for refs in task.splits.values():
        for ref in refs:
            sample = task.load(ref)
            assert sample.images["s2_l2a"].shape == (12, chip, chip)
            assert sample.images["s2_l2a"].dtype == np.uint16
            assert sample.images["s2_l1c"].shape == (13, chip, chip)
            assert sample.images["s1"].dtype == np.float32
            assert -40 < float(np.median(sample.images["s1"])) < 10  # dB
            if name == "landcover_seg":
                vals = set(np.unique(sample.mask).tolist())
                assert vals <= set(range(k)) | {255}
            else:
                assert 0 <= ref.label < k


def test_labels_and_masks_come_from_the_heldout_maps(world: Path) -> None:
    plan = plan_world(TINY)
    maps = {p.geo.grid_cell: render_scene(p).codes for p in plan.heldout}
    for name in ("landcover_cls", "landcover_seg"):
        root = world / "tasks" / name
        meta = json.loads((root / "task.json").read_text())
        codes = meta["worldcover_codes"]
        assert [CLASS_NAMES[c] for c in codes] == meta["classes"]
        with open(root / "samples.csv") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            cell, rest = r["sample_id"].split("_y")
            y, x = (int(v) for v in rest.split("_x"))
            chip = TINY.cls_chip if name == "landcover_cls" else TINY.seg_chip
            window = maps[cell][y : y + chip, x : x + chip]
            if name == "landcover_cls":
                vals, counts = np.unique(window, return_counts=True)
                assert codes[int(r["label"])] == vals[np.argmax(counts)]
                assert counts.max() >= TINY.min_purity * chip * chip
            else:
                with rasterio.open(root / "masks" / f"{r['sample_id']}.tif") as src:
                    mask = src.read(1)
                lut = np.full(256, 255, dtype=np.uint8)
                lut[codes] = np.arange(len(codes))
                np.testing.assert_array_equal(mask, lut[window])


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    cfg = WorldConfig(
        cells=3, cell_size=48, seed=5, task_cells_per_class=1, cls_chip=16, seg_chip=16
    )
    make_world(tmp_path / "a", cfg)
    make_world(tmp_path / "b", cfg)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 30
    make_world(tmp_path / "c", replace(cfg, seed=6))
    c = _digest(tmp_path / "c")
    common = [k for k in a if k in c and not k.endswith("task.json")]
    assert sum(a[k] != c[k] for k in common) == len(common) > 5


def test_reuse_overwrite_and_refusal(tmp_path: Path) -> None:
    cfg = WorldConfig(cells=2, cell_size=48, task_cells_per_class=0)
    out = tmp_path / "w"
    first = make_world(out, cfg)
    stamp = (out / "world.json").stat().st_mtime_ns
    assert make_world(out, cfg) == first  # same config: reused, untouched
    assert (out / "world.json").stat().st_mtime_ns == stamp
    other = WorldConfig(cells=3, cell_size=48, task_cells_per_class=0)
    with pytest.raises(WorldError, match="not empty"):
        make_world(out, other)
    assert make_world(out, other, overwrite=True)["products"]["S2L2A"] == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(WorldError, match="not part of a world"):
        make_world(out, cfg, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_damaged_world_is_not_reused(tmp_path: Path) -> None:
    cfg = WorldConfig(cells=2, cell_size=48, task_cells_per_class=0)
    out = tmp_path / "w"
    make_world(out, cfg)
    (out / "S1RTC" / "metadata.parquet").unlink()
    with pytest.raises(WorldError, match="not empty"):
        make_world(out, cfg)
    make_world(out, cfg, overwrite=True)
    assert (out / "S1RTC" / "metadata.parquet").is_file()
    (out / "world.json").write_text("{not json")
    with pytest.raises(WorldError, match="unreadable world manifest"):
        make_world(out, cfg)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"cell_size": 100}, "multiple of 6"),
        ({"cls_chip": 40}, "multiple of 16"),
        ({"seg_chip": 256}, "at most the held-out cell size"),
        ({"cloud_fraction": 1.5}, "cloud_fraction"),
        ({"cells": 0}, "cells"),
        ({"colour": "red"}, "unknown world config key"),
    ],
)
def test_bad_config_is_a_clear_error(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(WorldError, match=match):
        world_config("quickstart", **overrides)


def test_presets() -> None:
    quick, default = world_config("quickstart"), world_config("default")
    assert quick.cells * quick.cell_size**2 < default.cells * default.cell_size**2
    with pytest.raises(WorldError, match="unknown world preset"):
        world_config("huge")


def test_make_world_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["make-world", "--out", str(out), "--cells", "2", "--cell-size", "48"]
    assert main([*argv, "--task-cells-per-class", "0", "--seed", "1"]) == 0
    assert "S2L2A 2" in capsys.readouterr().out
    assert load_manifest(out)["config"]["seed"] == 1  # type: ignore[index]
    assert main([*argv, "--cell-size", "50"]) == 2
    assert "multiple of 6" in capsys.readouterr().out
