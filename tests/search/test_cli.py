"""``terrafm search`` and ``terrafm change`` through the real CLI; outputs open in GIS readers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from PIL import Image

from terrafm.cli import main


def _check_geoparquet(path) -> pq.ParquetFile:
    """What a GeoParquet reader needs: geo metadata, lon/lat CRS, WKB polygons inside the bbox."""
    f = pq.ParquetFile(path)
    geo = json.loads(f.schema_arrow.metadata[b"geo"])
    col = geo["columns"][geo["primary_column"]]
    assert col["encoding"] == "WKB" and col["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    geoms = shapely.from_wkb(f.read(columns=["geometry"]).column("geometry").to_pylist())
    assert all(g.geom_type == "Polygon" and g.is_valid for g in geoms)
    np.testing.assert_allclose(shapely.total_bounds(geoms), col["bbox"])
    return f


def test_cli_build_query_and_score_maps(scenes, tmp_path, capsys):
    idx = tmp_path / "index"
    tables = [str(scenes.table("orig")), f"file://{scenes.table('mod')}"]
    assert main(["search", "build", "--index", str(idx), *tables]) == 0
    assert "128 windows from 2 table(s), flat, recall@10 1.000" in capsys.readouterr().out
    hits, maps = tmp_path / "hits.parquet", tmp_path / "maps"
    args = ["search", "query", "--index", str(idx), "--window", f"{scenes.table('orig')}#12"]
    args += ["--k", "5", "--out", str(hits), "--score-maps", str(maps)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 hit(s) from 1 indexed positive(s)" in out
    t = _check_geoparquet(hits).read().to_pandas()
    assert t["rank"].tolist() == [1, 2, 3, 4, 5] and t["score"].is_monotonic_decreasing
    # window 12 of orig and of mod (the edit is in window 34): the same embedding
    assert set(t.loc[:1, "window_id"]) == {12} and t.loc[0, "score"] == pytest.approx(1, abs=1e-5)
    assert set(t.loc[:1, "table"]) == set(tables) and {
        s.split("/")[-1] for s in t.loc[:1, "scene"]
    } == {"Spain_7370579_S2Hand.tif", "in_mod.tif"}
    assert t.loc[0, "scene_crs"] == "EPSG:4326"
    pngs = sorted(maps.glob("*.png"))
    assert [p.name for p in pngs] == ["000_orig_scores.png", "001_mod_scores.png"]
    img = np.asarray(Image.open(pngs[0]))
    assert img.shape == (256, 256, 4) and (img[..., 3] == 255).all()  # 32 x 32 patches, x 8
    gpd = pytest.importorskip("geopandas")
    df = gpd.read_parquet(hits)
    assert df.crs.to_string() == "OGC:CRS84" and len(df) == 5
    with rasterio.open(scenes.tif("orig")) as src:
        assert df.geometry.iloc[0].within(shapely.box(*src.bounds).buffer(1e-9))


def test_cli_place_queries_with_filters(scenes, tmp_path, capsys):
    idx = tmp_path / "index"
    assert main(["search", "build", "--index", str(idx), str(scenes.table("orig"))]) == 0
    with rasterio.open(scenes.chip) as src:
        t, crs, bounds = src.transform, src.crs, src.bounds
    # a GeoJSON of two places and a GeoTIFF mask marking one pixel
    p1, p2 = t @ (20, 20), t @ (500, 500)
    gj = tmp_path / "places.geojson"
    feats = [{"type": "Feature", "geometry": shapely.Point(p).__geo_interface__} for p in (p1, p2)]
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    hits = tmp_path / "h.parquet"
    args = ["search", "query", "--index", str(idx), "--places", str(gj), "--exclude-positives"]
    midx = (bounds.left + bounds.right) / 2
    args += [f"--bbox={bounds.left},{bounds.bottom},{midx},{bounds.top}", "--k", "50"]
    assert main([*args, "--out", str(hits)]) == 0
    h = pq.read_table(hits).to_pandas()
    assert "from 2 indexed positive(s)" in capsys.readouterr().out
    assert len(h) == 31 and (h.col < 256).all()  # left half (32 windows) less window 0
    assert 0 not in set(h.window_id) and 63 not in set(h.window_id)
    mask = tmp_path / "mask.tif"
    data = np.zeros((1, 64, 64), np.uint8)
    data[0, 10, 40] = 1
    with rasterio.open(
        mask,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=t @ rasterio.Affine.scale(8),
    ) as dst:
        dst.write(data)
    assert (
        main(
            [
                "search",
                "query",
                "--index",
                str(idx),
                "--places",
                str(mask),
                "--k",
                "1",
                "--out",
                str(hits),
            ]
        )
        == 0
    )
    h = pq.read_table(hits).to_pandas()
    assert (h.row[0], h.col[0], h.score[0]) == (64, 320, pytest.approx(1, abs=1e-5))
    capsys.readouterr()
    assert main(["search", "query", "--index", str(idx), "--point=0,0", "--out", str(hits)]) == 1
    assert "no indexed window intersects" in capsys.readouterr().err


def test_cli_cross_sensor_query(scenes, tmp_path, capsys):
    idx, hits = tmp_path / "index", tmp_path / "h.parquet"
    assert main(["search", "build", "--index", str(idx), str(scenes.table("orig"))]) == 0
    args = ["search", "query", "--index", str(idx), "--window", f"{scenes.table('s1')}#9"]
    assert main([*args, "--min-score", "-1", "--out", str(hits)]) == 0
    assert "cross-sensor: ['s1'] against ['s2_l1c']" in capsys.readouterr().out
    meta = json.loads(pq.read_schema(hits).metadata[b"terrafm"])
    assert meta["query_sensors"] == ["s1"] and meta["index_sensors"] == ["s2_l1c"]
    assert len(pq.read_table(hits)) == 10


def test_cli_refuses_mixed_models(scenes, tmp_path, capsys):
    args = ["search", "build", "--index", str(tmp_path / "i")]
    assert main([*args, str(scenes.table("orig")), str(scenes.table("other"))]) == 1
    err = capsys.readouterr().err
    assert "other.parquet: embeddings not comparable" in err and "weights" in err


def test_cli_change(scenes, tmp_path, capsys):
    out, mask = tmp_path / "c.tif", tmp_path / "m.tif"
    args = ["change", str(scenes.tif("orig")), str(scenes.tif("mod")), "--out", str(out)]
    assert main([*args, "--threshold", "0.3", "--mask", str(mask)]) == 0
    text = capsys.readouterr().out
    assert "1024/1024 valid patches" in text and "above 0.3" in text
    with rasterio.open(out) as a, rasterio.open(mask) as m:
        assert a.count == 1 and np.isnan(a.nodata) and m.nodata == 255
        assert (m.read(1) == 1).sum() >= 1
    bad = ["change", str(scenes.tif("orig")), str(scenes.tif("other")), "--out", str(out)]
    assert main(bad) == 1
    assert "come from different models" in capsys.readouterr().err
