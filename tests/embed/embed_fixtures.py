"""Raster writers and reference computations shared by the embedding tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import Affine

from terrafm.models import TerraFM
from terrafm.sensors import get_sensor

L2A_SAFE = "S2B_MSIL2A_20230601T102559_N0509_R108_T32UPU_20230601T131710.SAFE"
L2A_GRANULE = "L2A_T32UPU_A032460_20230601T102557"
L2A_STEM = "T32UPU_20230601T102559"
# Which bands an L2A product stores at each resolution (besides AOT, WVP, SCL, TCI).
L2A_RES = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"),
}
MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
 <n1:General_Info><Product_Image_Characteristics>
  <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
  <BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
  </BOA_ADD_OFFSET_VALUES_LIST>
 </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


def write_raster(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str | None = "EPSG:32633",
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> Path:
    """A GeoTIFF with the given bands (C, H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "transform": transform,
    }
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        if descriptions is not None:
            dst.descriptions = tuple(descriptions)
    return path


def copy_raster(src: Path, dst: Path, edit=None) -> Path:
    """Copy a raster (bands, descriptions, CRS, transform, nodata), optionally editing its data."""
    with rasterio.open(src) as s:
        data = s.read()
        if edit is not None:
            data = edit(data)
        return write_raster(
            dst, data, s.transform, s.crs.to_wkt() if s.crs else None, s.nodata, s.descriptions
        )


def direct_embedding(
    model: TerraFM, inputs: dict[str, torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """The model applied to one window directly: (D, gh, gw) patch map and (D,) CLS."""
    with torch.inference_mode():
        out = model.forward_features({k: v[None] for k, v in inputs.items()})
    gh, gw = (int(v) for v in out["grid"])
    fmap = out["x_norm_patchtokens"][0].reshape(gh, gw, -1).permute(2, 0, 1)
    return fmap.numpy(), out["x_norm_clstoken"][0].numpy()


def make_l2a_safe(
    root: Path, size: int = 96, seed: int = 0, offset: bool = True
) -> tuple[Path, dict[str, np.ndarray]]:
    """A Sentinel-2 L2A SAFE in the published layout: R10m/R20m/R60m JP2 files, MTD_MSIL2A.xml.

    Returns the ``IMG_DATA`` folder and the native-resolution DN array of each band (the finest copy).
    """
    rng = np.random.default_rng(seed)
    safe = root / L2A_SAFE
    img = safe / "GRANULE" / L2A_GRANULE / "IMG_DATA"
    off = (
        "\n".join(f'   <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
        if offset
        else ""
    )
    safe.mkdir(parents=True, exist_ok=True)
    (safe / "MTD_MSIL2A.xml").write_text(MTD.format(offsets=off))
    finest: dict[str, np.ndarray] = {}
    for res in (10, 20, 60):
        n = size * 10 // res
        t = Affine(res, 0, 600000, 0, -res, 5300000)
        for band in (*L2A_RES[res], "AOT", "WVP", "SCL", "TCI"):
            data = rng.integers(1100, 6000, (1, n, n)).astype(np.uint16)
            path = img / f"R{res}m" / f"{L2A_STEM}_{band}_{res}m.jp2"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                path,
                "w",
                driver="JP2OpenJPEG",
                width=n,
                height=n,
                count=1,
                dtype="uint16",
                crs="EPSG:32632",
                transform=t,
                QUALITY=100,
                REVERSIBLE="YES",
            ) as dst:
                dst.write(data)
            finest.setdefault(band, data[0])
    return img, {b: finest[b] for b in get_sensor("s2_l2a").band_names}


def read_window(
    path: Path, row: int, col: int, h: int, w: int
) -> tuple[np.ndarray, list[str], float | None]:
    """Raw bands of a window straight from a file: (C, h, w) float32, band names, nodata."""
    from rasterio.windows import Window

    with rasterio.open(path) as s:
        data = s.read(window=Window(col, row, w, h)).astype(np.float32)
        return data, [str(d) for d in s.descriptions], s.nodata


def owned(w, patch: int = 16) -> tuple[slice, slice]:
    """Owned output pixels of a window in raster coordinates."""
    return slice(w.own_row0, w.own_row1), slice(w.own_col0, w.own_col1)
