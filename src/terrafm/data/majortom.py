"""Major-TOM Core layout: writer and lazy reader (SPEC §5, contract A).

Layout per product (``S2L2A``, ``S2L1C``, ``S1RTC``)::

    <root>/<product>/metadata.parquet
    <root>/<product>/images/part_00000.parquet ...   one row group per sample

Image columns: ``product_id``, ``grid_cell``, ``product_datetime``, ``thumbnail`` (PNG bytes) and one
binary column per band holding a complete GeoTIFF at the band's native resolution (10 m bands are
S x S for a cell of S px, 20 m bands S/2, 60 m bands S/6; real cells are 1068 px).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from terrafm.checkpoint import atomic_write
from terrafm.data.geotiff import encode_geotiff, encode_png, repair_crs

__all__ = [
    "PRODUCTS",
    "MajorTomSample",
    "ProductSpec",
    "native_size",
    "parse_grid_cell",
    "write_product",
]

_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
_S2_L1C_BANDS = (*_S2_BANDS[:10], "B10", *_S2_BANDS[10:])


@dataclass(frozen=True)
class ProductSpec:
    """One Major-TOM product.

    Attributes:
        name: product name (``S2L2A``).
        sensor: terrafm sensor key it feeds (``s2_l2a``).
        bands: band columns in file order (Major-TOM spelling: ``B8A``, lowercase ``vv``).
        reference_band: a 10 m band, whose size defines the cell size S.
        mask_column: the cloud mask column, if any.
    """

    name: str
    sensor: str
    bands: tuple[str, ...]
    reference_band: str
    mask_column: str | None

    @property
    def columns(self) -> tuple[str, ...]:
        """Every image column of the product, in file order."""
        mask = (self.mask_column,) if self.mask_column else ()
        return ("product_id", "grid_cell", "product_datetime", "thumbnail", *self.bands, *mask)

    @property
    def metadata_columns(self) -> tuple[str, ...]:
        head = ("grid_cell", "grid_row_u", "grid_col_r", "product_id", "timestamp")
        tail = ("centre_lat", "centre_lon", "crs", "parquet_url", "parquet_row")
        if self.sensor == "s1":
            return (*head, "nodata", "orbit_state", *tail)
        return (*head, "cloud_cover", "nodata", *tail)


PRODUCTS: dict[str, ProductSpec] = {
    "S2L2A": ProductSpec("S2L2A", "s2_l2a", _S2_BANDS, "B02", "cloud_mask"),
    "S2L1C": ProductSpec("S2L1C", "s2_l1c", _S2_L1C_BANDS, "B02", "cloud_mask"),
    "S1RTC": ProductSpec("S1RTC", "s1", ("vv", "vh"), "vv", None),
}

_GSD = {
    **{b: 10 for b in ("B02", "B03", "B04", "B08", "vv", "vh", "cloud_mask")},
    **{b: 20 for b in ("B05", "B06", "B07", "B8A", "B11", "B12")},
    **{b: 60 for b in ("B01", "B09", "B10")},
}


def native_size(band: str, cell_size: int) -> int:
    """Side in pixels at which Major-TOM stores ``band`` for a cell of ``cell_size`` px at 10 m.

    1068 px cells: 10 m bands 1068, 20 m bands 534, 60 m bands 178 (and the cloud mask 1068).
    """
    if band not in _GSD:
        raise ValueError(f"unknown Major-TOM band column {band!r}")
    return max(1, round(cell_size * 10 / _GSD[band]))


_GRID_CELL = re.compile(r"^(\d+)([UD])_(\d+)([LR])$")


def parse_grid_cell(cell: str) -> tuple[int, int]:
    """``(grid_row_u, grid_col_r)`` of a Major-TOM grid cell name.

    ``282D_485L`` is 282 rows south (D) and 485 columns west (L): ``(-282, -485)``.
    """
    m = _GRID_CELL.match(cell.strip())
    if not m:
        raise ValueError(f"malformed Major-TOM grid cell {cell!r}; expected like '282D_485L'")
    row = int(m.group(1)) * (1 if m.group(2) == "U" else -1)
    col = int(m.group(3)) * (1 if m.group(4) == "R" else -1)
    return row, col


@dataclass
class MajorTomSample:
    """One grid cell of one product, as the writer takes it (contract A).

    Attributes:
        grid_cell: Major-TOM cell name, e.g. ``282D_485L``.
        product_id: source product name (S2: ``S2A_MSIL2A_..._N0500_...``).
        timestamp: acquisition time.
        bands: column name -> 2-D array at native resolution (uint16 S2 DN, uint8 cloud_mask,
            float32 S1 linear power).
        crs: CRS string as it should appear in the metadata (may be malformed on purpose, e.g.
            ``EPSG:EPSG:32633``; the GeoTIFFs always get the repaired CRS).
        transform: affine (a, b, c, d, e, f) of the cell's 10 m grid.
        centre_lat: cell centre latitude.
        centre_lon: cell centre longitude.
        cloud_cover: cloud cover in percent (S2 only).
        nodata: fraction of no-data pixels in the cell (0..1).
        orbit_state: ``ascending`` / ``descending`` (S1 only).
    """

    grid_cell: str
    product_id: str
    timestamp: datetime
    bands: dict[str, np.ndarray]
    crs: str
    transform: tuple[float, ...]
    centre_lat: float
    centre_lon: float
    cloud_cover: float | None = None
    nodata: float = 0.0
    orbit_state: str | None = None


def _band_transform(
    transform: Sequence[float], cell: int, shape: tuple[int, ...]
) -> tuple[float, ...]:
    """Affine of a band stored at ``shape`` covering the same footprint as the S x S 10 m grid."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    sy, sx = cell / shape[0], cell / shape[1]
    return (a * sx, b * sy, c, d * sx, e * sy, f)


def _thumbnail(spec: ProductSpec, bands: dict[str, np.ndarray], max_size: int = 256) -> bytes:
    """A small RGB PNG: true colour for S2 (B04, B03, B02), (VV, VH, VV/VH) in dB for S1."""
    ref = bands[spec.reference_band]
    step = max(1, int(np.ceil(max(ref.shape) / max_size)))
    if spec.sensor == "s1":
        vv, vh = (10 * np.log10(np.maximum(bands[k][::step, ::step], 1e-5)) for k in ("vv", "vh"))
        rgb = np.stack([(vv + 25) / 25, (vh + 30) / 25, (vv - vh) / 15])
    else:
        rgb = np.stack([bands[k][::step, ::step] / 3000.0 for k in ("B04", "B03", "B02")])
    return encode_png((np.clip(np.nan_to_num(rgb), 0, 1) * 255).astype(np.uint8))


def _check_sample(spec: ProductSpec, s: MajorTomSample) -> int:
    """Validate one sample against its product; returns the cell size S."""
    need = set(spec.bands) | ({spec.mask_column} if spec.mask_column else set())
    missing = sorted(need - set(s.bands))
    unknown = sorted(set(s.bands) - need)
    if missing or unknown:
        raise ValueError(
            f"{spec.name} sample {s.grid_cell!r}: missing band columns {missing}, unknown {unknown}"
        )
    ref = s.bands[spec.reference_band]
    if ref.ndim != 2 or ref.shape[0] != ref.shape[1]:
        raise ValueError(
            f"{spec.name} sample {s.grid_cell!r}: 10 m band must be square 2-D, got {ref.shape}"
        )
    for name, arr in s.bands.items():
        if arr.ndim != 2:
            raise ValueError(
                f"{spec.name} sample {s.grid_cell!r}: band {name} is not 2-D ({arr.shape})"
            )
    if len(s.transform) < 6:
        raise ValueError(f"{spec.name} sample {s.grid_cell!r}: transform needs 6 elements")
    return int(ref.shape[0])


def _image_row(spec: ProductSpec, s: MajorTomSample) -> dict[str, list[object]]:
    cell = _check_sample(spec, s)
    crs = repair_crs(s.crs)
    row: dict[str, list[object]] = {
        "product_id": [s.product_id],
        "grid_cell": [s.grid_cell],
        "product_datetime": [s.timestamp.strftime("%Y%m%dT%H%M%S")],
        "thumbnail": [_thumbnail(spec, s.bands)],
    }
    for name in spec.columns[4:]:
        arr = s.bands[name]
        nodata = None if name == spec.mask_column else (0.0 if spec.sensor != "s1" else None)
        row[name] = [
            encode_geotiff(arr, crs, _band_transform(s.transform, cell, arr.shape), nodata)
        ]
    return row


def _image_schema(spec: ProductSpec) -> pa.Schema:
    fields = [pa.field(c, pa.string()) for c in spec.columns[:3]]
    fields += [pa.field(c, pa.binary()) for c in spec.columns[3:]]
    return pa.schema(fields)


def _metadata_table(spec: ProductSpec, rows: list[dict[str, object]]) -> pa.Table:
    types = {
        "grid_cell": pa.string(),
        "grid_row_u": pa.int64(),
        "grid_col_r": pa.int64(),
        "product_id": pa.string(),
        "timestamp": pa.timestamp("us"),
        "cloud_cover": pa.float64(),
        "nodata": pa.float64(),
        "orbit_state": pa.string(),
        "centre_lat": pa.float64(),
        "centre_lon": pa.float64(),
        "crs": pa.string(),
        "parquet_url": pa.string(),
        "parquet_row": pa.int64(),
    }
    cols = spec.metadata_columns
    return pa.table({c: pa.array([r[c] for r in rows], type=types[c]) for c in cols})


def write_product(
    root: str | Path, product: str, samples: Sequence[MajorTomSample], rows_per_file: int = 64
) -> Path:
    """Write ``samples`` as one Major-TOM product under ``root/product`` (contract A).

    Each sample becomes one row group; ``rows_per_file`` samples share an image parquet file.
    Files are written atomically. Returns the product folder.

    Raises:
        ValueError: unknown product, a sample missing (or with unknown) band columns, non-2-D or
            non-square 10 m bands, or a malformed grid cell name.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown Major-TOM product {product!r}; expected one of {list(PRODUCTS)}")
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be >= 1")
    spec = PRODUCTS[product]
    out = Path(root) / product
    (out / "images").mkdir(parents=True, exist_ok=True)
    schema = _image_schema(spec)
    meta_rows: list[dict[str, object]] = []
    for start in range(0, len(samples), rows_per_file):
        name = f"images/part_{start // rows_per_file:05d}.parquet"
        with atomic_write(out / name) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for i, s in enumerate(samples[start : start + rows_per_file]):
                writer.write_table(pa.table(_image_row(spec, s), schema=schema))  # one row group
                meta_rows.append(_metadata_row(s, name, i))
    with atomic_write(out / "metadata.parquet") as tmp:
        pq.write_table(_metadata_table(spec, meta_rows), tmp)
    return out


def _metadata_row(s: MajorTomSample, url: str, row: int) -> dict[str, object]:
    grid_row_u, grid_col_r = parse_grid_cell(s.grid_cell)
    return {
        "grid_cell": s.grid_cell,
        "grid_row_u": grid_row_u,
        "grid_col_r": grid_col_r,
        "product_id": s.product_id,
        "timestamp": s.timestamp,
        "cloud_cover": s.cloud_cover,
        "nodata": float(s.nodata),
        "orbit_state": s.orbit_state,
        "centre_lat": float(s.centre_lat),
        "centre_lon": float(s.centre_lon),
        "crs": s.crs,
        "parquet_url": url,
        "parquet_row": row,
    }
