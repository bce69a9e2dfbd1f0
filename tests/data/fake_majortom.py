"""Tiny Major-TOM roots in the exact published layout, for the data tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from terrafm.data.landcover import WORLDCOVER_CLASSES, LandCover, write_landcover
from terrafm.data.majortom import PRODUCTS, MajorTomSample, native_size, write_product

BandFn = Callable[[str, str, int, np.random.Generator], np.ndarray]
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def random_band(product: str, band: str, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth-ish positive data of the band's native size and dtype."""
    n = native_size(band, cell)
    if band == "cloud_mask":
        return np.zeros((n, n), np.uint8)
    base = rng.uniform(0.5, 1.5) * np.add.outer(np.linspace(0, 1, n), np.linspace(0, 1, n))
    if product == "S1RTC":
        return (0.02 + 0.1 * base + 0.01 * rng.random((n, n))).astype(np.float32)
    return (500 + 2000 * base + 50 * rng.random((n, n))).astype(np.uint16)


def make_sample(
    product: str,
    cell: str,
    size: int,
    rng: np.random.Generator,
    band_fn: BandFn = random_band,
    **kw: object,
) -> MajorTomSample:
    spec = PRODUCTS[product]
    cols = [*spec.bands, *((spec.mask_column,) if spec.mask_column else ())]
    s1 = product == "S1RTC"
    defaults: dict[str, object] = {
        "product_id": "S1A_IW_GRDH_1SDV_20200101"
        if s1
        else f"S2A_MSI{product[2:]}_20200101T100000_N0213_R000_T33UUU_20200101",
        "timestamp": datetime(2020, 1, 1, 10),
        "crs": "EPSG:EPSG:32633",
        "transform": TRANSFORM,
        "centre_lat": 45.0,
        "centre_lon": 12.0,
        "cloud_cover": None if s1 else 1.5,
        "orbit_state": "ascending" if s1 else None,
    }
    defaults.update(kw)
    return MajorTomSample(
        grid_cell=cell,
        bands={b: band_fn(product, b, size, rng) for b in cols},
        **defaults,  # type: ignore[arg-type]
    )


def make_root(
    root: Path,
    cells: Sequence[str],
    size: int = 48,
    products: Sequence[str] = ("S2L2A", "S2L1C", "S1RTC"),
    band_fn: BandFn = random_band,
    rows_per_file: int = 3,
    seed: int = 0,
    landcover: dict[str, int] | None = None,
) -> Path:
    """Write ``products`` for ``cells`` (and a land-cover table if given) under ``root``."""
    rng = np.random.default_rng(seed)
    for p in products:
        write_product(
            root, p, [make_sample(p, c, size, rng, band_fn) for c in cells], rows_per_file
        )
    if landcover is not None:
        recs = []
        for c, cls in landcover.items():
            hist = [0.0] * len(WORLDCOVER_CLASSES)
            hist[WORLDCOVER_CLASSES.index(cls)] = 1.0
            recs.append(LandCover(c, cls, tuple(hist), "Cfb", "europe"))
        write_landcover(root, recs)
    return root


def rewrite_image_file(
    path: Path, edit: Callable[[int, dict[str, object]], dict[str, object]]
) -> None:
    """Rewrite an image parquet with ``edit(row_index, row)`` applied, one row group per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    rows = [edit(i, pf.read_row_group(i).to_pylist()[0]) for i in range(pf.num_row_groups)]
    schema = pa.schema([f for f in pf.schema_arrow if f.name in rows[0]])
    with pq.ParquetWriter(path, schema) as w:
        for r in rows:
            w.write_table(pa.Table.from_pylist([r], schema=schema))
