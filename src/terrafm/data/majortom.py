"""Major-TOM Core layout: writer and lazy reader (docs/design.md, "Pretraining data", contract A).

Layout per product (``S2L2A``, ``S2L1C``, ``S1RTC``)::

    <root>/<product>/metadata.parquet
    <root>/<product>/images/part_00000.parquet ...   one row group per sample

Image columns: ``product_id``, ``grid_cell``, ``product_datetime``, ``thumbnail`` (PNG bytes) and one
binary column per band holding a complete GeoTIFF at the band's native resolution (10 m bands are
S x S for a cell of S px, 20 m bands S/2, 60 m bands S/6; real cells are 1068 px).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rasterio.windows import Window

from terrafm.data.skips import SampleError
from terrafm.data.tiles import NativeGroup, SensorTile, processing_baseline
from terrafm.errors import DataError
from terrafm.io.geotiff import (
    DecodedRaster,
    decode_geotiff,
    encode_geotiff,
    encode_png,
    open_bytes,
    read_window,
    repair_crs,
)
from terrafm.io.resample import _resample_full
from terrafm.outputs import atomic_write
from terrafm.sensors import BOA_ADD_OFFSET, linear_to_db

__all__ = [
    "PRODUCTS",
    "SENSOR_PRODUCT",
    "MajorTomProduct",
    "MajorTomSample",
    "MetadataError",
    "MetadataNotFoundError",
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


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------

SENSOR_PRODUCT = {"s2_l2a": "S2L2A", "s2_l1c": "S2L1C", "s1": "S1RTC"}
_META_READ = (
    "grid_cell",
    "product_id",
    "cloud_cover",
    "nodata",
    "crs",
    "parquet_url",
    "parquet_row",
)


class MetadataError(DataError, ValueError):
    """A product's ``metadata.parquet`` that cannot be read (names the file and the cause)."""


class MetadataNotFoundError(DataError, FileNotFoundError):
    """A product folder without ``metadata.parquet``."""


def _product_from_path(path: str) -> str:
    """``S2L2A`` from a folder named ``S2L2A`` or ``Core-S2L2A`` (Hugging Face repo name)."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    for name in PRODUCTS:
        if last == name or last.endswith(f"-{name}"):
            return name
    raise ValueError(f"cannot tell the Major-TOM product of {path!r}; pass product=")


class MajorTomProduct:
    """Lazy reader of one Major-TOM product folder, local or any fsspec URL.

    Only ``metadata.parquet`` is read up front. Image data is read one row group (= one sample)
    at a time, and only the requested band columns, with pyarrow; each band's GeoTIFF is then
    decoded only over the window asked for. Open parquet files are cached per process (a DataLoader
    worker reopens its own).

    Args:
        path: the product folder (``<root>/S2L2A``, ``hf://datasets/Major-TOM/Core-S2L2A`` ...).
        product: product name; inferred from the folder name when omitted.
        storage_options: passed to fsspec for remote paths.
    """

    def __init__(
        self,
        path: str | Path,
        product: str | None = None,
        storage_options: dict[str, object] | None = None,
    ) -> None:
        import fsspec

        self.url = str(path)
        self.spec = PRODUCTS[product or _product_from_path(self.url)]
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.metadata = self._read_metadata()
        self._files: dict[str, pq.ParquetFile] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_files"] = {}  # file handles never cross process boundaries
        return state

    def __len__(self) -> int:
        return len(self.metadata)

    def _read_metadata(self) -> pd.DataFrame:
        path = f"{self.path}/metadata.parquet"
        try:
            with self.fs.open(path, "rb") as f:
                table = pq.read_table(f)
        except FileNotFoundError:
            raise MetadataNotFoundError(
                f"Major-TOM metadata not found: {self.url}/metadata.parquet"
            ) from None
        except (pa.ArrowException, OSError) as e:  # truncated, corrupt or not parquet at all
            raise MetadataError(
                f"{self.url}/metadata.parquet: not a parquet file, or a truncated one "
                f"({' '.join(str(e).split())})"
            ) from e
        cols = [c for c in _META_READ if c in table.column_names]
        need = {"grid_cell", "parquet_url", "parquet_row"}
        if not need <= set(cols):
            raise MetadataError(
                f"{self.url}/metadata.parquet lacks columns {sorted(need - set(cols))}; "
                f"has {table.column_names}"
            )
        df = table.select(cols).to_pandas()
        df["grid_cell"] = df["grid_cell"].astype(str)
        # Compact columns: millions of rows share a few thousand file names and CRSs, and only the
        # processing baseline of product_id is needed (-1 when it has none).
        ids = df.pop("product_id") if "product_id" in df else pd.Series([""] * len(df))
        df["baseline"] = np.array([processing_baseline(str(v)) or -1 for v in ids], np.int16)
        df["parquet_url"] = df["parquet_url"].astype("category")
        if "crs" in df:
            df["crs"] = df["crs"].map(lambda v: repair_crs(v) if isinstance(v, str) else v)
            df["crs"] = df["crs"].astype("category")
        return df

    def image_file(self, i: int) -> str:
        """Path (in the product's filesystem) of the image parquet holding sample ``i``."""
        url = str(self.metadata["parquet_url"].iat[i])
        if "images/" in url:  # a mirror: resolve relative to this product folder
            return f"{self.path}/images/{url.rsplit('images/', 1)[1]}"
        return self.fs._strip_protocol(url)  # type: ignore[no-any-return]

    def locate(self, i: int) -> tuple[str, int]:
        """(image file, row group) of sample ``i``."""
        return self.image_file(i), int(self.metadata["parquet_row"].iat[i])

    def _parquet(self, file: str) -> pq.ParquetFile:
        if os.getpid() != self._pid:  # forked: inherited handles share offsets, reopen
            self._files, self._pid = {}, os.getpid()
        pf = self._files.get(file)
        if pf is None:
            if len(self._files) >= _MAX_OPEN:
                self._files.pop(next(iter(self._files)))
            pf = pq.ParquetFile(self.fs.open(file, "rb"))
            self._files[file] = pf
        return pf

    def read_row(self, i: int, columns: Sequence[str]) -> dict[str, object]:
        """Read ``columns`` of sample ``i`` (one row group) as Python values.

        Raises:
            SampleError: unreadable file or row group, missing band column, or a row group that
                holds another grid cell than the metadata says.
        """
        file, rg = self.locate(i)
        where = f"{self.spec.name} {file} row group {rg}"
        try:
            pf = self._parquet(file)
        except Exception as e:
            raise SampleError("corrupt_file", where, f"cannot open image parquet: {e}") from e
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise SampleError("missing_band", where, f"missing band columns {missing}")
        if rg >= pf.num_row_groups:
            raise SampleError("mismatch", where, f"file has only {pf.num_row_groups} row groups")
        try:
            table = pf.read_row_group(rg, columns=[*dict.fromkeys(["grid_cell", *columns])])
        except Exception as e:
            raise SampleError("corrupt_row_group", where, f"unreadable row group: {e}") from e
        row = {c: table.column(c)[0].as_py() for c in table.column_names}
        expected = str(self.metadata["grid_cell"].iat[i])
        if row["grid_cell"] != expected:
            raise SampleError(
                "mismatch", where, f"holds cell {row['grid_cell']!r}, metadata says {expected!r}"
            )
        return row

    def read_cell(self, i: int) -> dict[str, DecodedRaster]:
        """Every band of sample ``i`` decoded at native resolution (for inspection and tests)."""
        bands = [*self.spec.bands, *((self.spec.mask_column,) if self.spec.mask_column else ())]
        row = self.read_row(i, bands)
        file, rg = self.locate(i)
        out = {}
        for b in bands:
            try:
                out[b] = decode_geotiff(row[b])  # type: ignore[arg-type]
            except Exception as e:
                raise SampleError(
                    "corrupt_geotiff", f"{file} row group {rg} band {b}", str(e)
                ) from e
        return out

    def read_tile(
        self,
        i: int,
        tile: int,
        tiles_per_side: int = 2,
        out_cell: int | None = None,
        mask_clouds: bool = True,
        harmonize: bool = True,
        native: bool = False,
    ) -> tuple[SensorTile, int]:
        """One tile of sample ``i`` on the 10 m grid, for the product's sensor.

        Args:
            i: sample (metadata row).
            tile: tile number, row-major in a ``tiles_per_side`` x ``tiles_per_side`` split.
            tiles_per_side: 2 splits a 1068 px cell into four 534 px tiles.
            out_cell: size of the 10 m grid to resample onto (default: this product's own cell
                size, from its 10 m reference band), so several products share one grid.
            mask_clouds: mark ``cloud_mask`` pixels invalid.
            harmonize: remove the +1000 DN offset of processing baseline >= 04.00 products.
            native: also return the bands at their native resolution (``SensorTile.native``,
                the 20 m and 60 m bands with a one-pixel halo); the 10 m values are resampled
                from those same native pixels.

        Returns:
            (tile, cell size of the grid used).
        """
        spec = self.spec
        model_bands = [b for b in spec.bands if b != "B10"]  # L1C's B10 is never decoded
        mask = [spec.mask_column] if (spec.mask_column and mask_clouds) else []
        row = self.read_row(i, [*model_bands, *mask])
        file, rg = self.locate(i)
        where = f"{spec.name} {file} row group {rg} cell {row['grid_cell']} tile {tile}"
        blobs = {b: row[b] for b in [*model_bands, *mask]}
        cell = out_cell or _raster_size(blobs[spec.reference_band], where, spec.reference_band)
        size = cell // tiles_per_side
        window = ((tile // tiles_per_side) * size, (tile % tiles_per_side) * size, size, size)
        arrays, nodata_tags = {}, {}
        coarse: dict[str, np.ndarray] = {}  # band -> native pixels with halo (native=True)
        for b in [*model_bands, *mask]:
            mode = "nearest" if b in mask or _GSD[b] == 10 else "bilinear"
            if native and mode == "bilinear" and spec.sensor != "s1":
                arrays[b], nodata_tags[b], coarse[b] = _decode_native(
                    blobs[b], cell, window, _GSD[b] // 10, f"{where} band {b}"
                )
                continue
            arrays[b], nodata_tags[b] = _decode_window(
                blobs[b], (cell, cell), window, mode, f"{where} band {b}"
            )
        if spec.sensor == "s1":
            tile_data = _s1_tile(arrays, nodata_tags)
            if native:
                bands = tuple(range(tile_data.data.shape[0]))
                tile_data = replace(tile_data, native=(NativeGroup(1, bands, tile_data.data),))
        else:
            baseline = int(self.metadata["baseline"].iat[i])
            tile_data = _s2_tile(arrays, nodata_tags, model_bands, mask, baseline, harmonize)
            if native:
                shift = BOA_ADD_OFFSET if harmonize and baseline >= 400 else 0.0
                tile_data = replace(
                    tile_data, native=_native_groups(tile_data.data, coarse, model_bands, shift)
                )
        return tile_data, cell


_MAX_OPEN = 16  # open image parquet files kept per process and product


def _raster_size(blob: object, where: str, band: str) -> int:
    try:
        with open_bytes(blob) as src:  # type: ignore[arg-type]
            if src.height != src.width:
                raise SampleError("mismatch", f"{where} band {band}", f"not square: {src.shape}")
            return int(src.height)
    except SampleError:
        raise
    except Exception as e:
        raise SampleError("corrupt_geotiff", f"{where} band {band}", str(e)) from e


def _decode_window(
    blob: object,
    out_size: tuple[int, int],
    window: tuple[int, int, int, int],
    mode: str,
    where: str,
) -> tuple[np.ndarray, float | None]:
    """Decode the part of a band GeoTIFF that ``window`` of the 10 m grid needs: (h, w) + nodata."""
    if not isinstance(blob, bytes | bytearray) or not blob:
        raise SampleError("corrupt_geotiff", where, "empty band cell")
    try:
        with open_bytes(bytes(blob)) as src:
            if src.count != 1:
                raise SampleError(
                    "corrupt_geotiff", where, f"expected 1 band, file has {src.count}"
                )
            return read_window(src, out_size, window, mode)[0], src.nodata
    except SampleError:
        raise
    except Exception as e:
        raise SampleError("corrupt_geotiff", where, f"undecodable GeoTIFF: {e}") from e


def _decode_native(
    blob: object, cell: int, window: tuple[int, int, int, int], factor: int, where: str
) -> tuple[np.ndarray, float | None, np.ndarray]:
    """A coarse band's tile at native resolution with a one-pixel halo, and its 10 m window.

    The native raster must be exactly ``cell / factor`` px (Major-TOM: 534 px 20 m and 178 px 60 m
    bands in 1068 px cells) and the tile window a whole number of native pixels. The halo holds the
    neighbouring tile's pixels, or the edge pixel repeated at the cell edge (what the clamped
    bilinear sampling of :mod:`terrafm.io.resample` reads there). The 10 m values are that
    resampling of these same pixels.

    Returns:
        (10 m window (h, w) float32, nodata tag, native (h / factor + 2, w / factor + 2) pixels).
    """
    if not isinstance(blob, bytes | bytearray) or not blob:
        raise SampleError("corrupt_geotiff", where, "empty band cell")
    top, left, h, w = window
    if cell % factor or top % factor or left % factor or h % factor or w % factor:
        raise SampleError(
            "mismatch",
            where,
            f"tile window {window} of a {cell} px cell is not whole {factor * 10} m pixels: "
            "cannot keep the band at native resolution (prepare a store on the 10 m grid)",
        )
    try:
        with open_bytes(bytes(blob)) as src:
            if src.count != 1:
                raise SampleError(
                    "corrupt_geotiff", where, f"expected 1 band, file has {src.count}"
                )
            n = cell // factor
            if (src.height, src.width) != (n, n):
                raise SampleError(
                    "mismatch",
                    where,
                    f"native raster {src.height}x{src.width} px, expected {n}x{n} px for a "
                    f"{cell} px cell at {factor * 10} m",
                )
            r0, c0 = top // factor - 1, left // factor - 1
            r1, c1 = r0 + h // factor + 2, c0 + w // factor + 2
            lo_r, lo_c, hi_r, hi_c = max(r0, 0), max(c0, 0), min(r1, n), min(c1, n)
            got = src.read(1, window=Window(lo_c, lo_r, hi_c - lo_c, hi_r - lo_r))
            nodata = src.nodata
    except SampleError:
        raise
    except Exception as e:
        raise SampleError("corrupt_geotiff", where, f"undecodable GeoTIFF: {e}") from e
    ten_m = _resample_full(got[None], (n, n), (cell, cell), window, "bilinear", (lo_r, lo_c))[0]
    pads = ((lo_r - r0, r1 - hi_r), (lo_c - c0, c1 - hi_c))
    return ten_m, nodata, np.pad(got, pads, mode="edge")


def _native_groups(
    data: np.ndarray, coarse: dict[str, np.ndarray], bands: list[str], shift: float
) -> tuple[NativeGroup, ...]:
    """The S2 bands of a tile grouped by native resolution (10 m values from ``data``)."""
    groups = []
    for gsd in (10, 20, 60):
        idx = tuple(k for k, b in enumerate(bands) if _GSD[b] == gsd)
        if not idx:
            continue
        if gsd == 10:
            groups.append(NativeGroup(1, idx, data[list(idx)]))
        else:
            stack = np.stack([coarse[bands[k]].astype(np.float32) for k in idx]) - np.float32(shift)
            groups.append(NativeGroup(gsd // 10, idx, stack, halo=1))
    return tuple(groups)


def _s2_tile(
    arrays: dict[str, np.ndarray],
    nodata_tags: dict[str, float | None],
    bands: list[str],
    mask: list[str],
    baseline: int,
    harmonize: bool,
) -> SensorTile:
    """S2 bands to a :class:`SensorTile` (stem order, offset removed, no-data and cloud masked)."""
    ten_m = [b for b in bands if _GSD[b] == 10]
    nodata = [nodata_tags[b] if nodata_tags[b] is not None else 0.0 for b in ten_m]
    empty = np.all([arrays[b] == nd for b, nd in zip(ten_m, nodata)], axis=0)  # (T, T)
    data = np.stack([arrays[b].astype(np.float32) for b in bands])  # (12, T, T) in stem order
    if harmonize and baseline >= 400:
        data -= BOA_ADD_OFFSET  # DN = reflectance x 1e4 + 1000 since baseline 04.00 (docs/design.md, "Sensors and units")
    valid = ~empty
    if mask:
        valid &= arrays[mask[0]] == 0
    return SensorTile(data, valid)


def _s1_tile(arrays: dict[str, np.ndarray], nodata_tags: dict[str, float | None]) -> SensorTile:
    """S1 linear power to dB; non-positive, non-finite or tagged no-data pixels are invalid."""
    lin = np.stack([arrays["vv"], arrays["vh"]]).astype(np.float32)  # (2, T, T)
    valid = np.all(np.isfinite(lin) & (lin > 0), axis=0)
    for k, b in enumerate(("vv", "vh")):
        tag = nodata_tags[b]
        if tag is not None and np.isfinite(tag):
            valid &= lin[k] != tag
    db = np.asarray(linear_to_db(np.where(np.isfinite(lin), lin, np.nan)), dtype=np.float32)
    return SensorTile(db, valid)
