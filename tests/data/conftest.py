"""Fixtures of the data tests: a small Major-TOM root shared by the read-only tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib: make this folder's helper module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_majortom import make_root

CELLS = ("1U_1R", "1U_2R", "2U_1R", "3D_4L", "5U_6L")
LANDCOVER = {"1U_1R": 10, "1U_2R": 10, "2U_1R": 40, "3D_4L": 30, "5U_6L": 50}


@pytest.fixture(scope="session")
def mt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three products, five 48 px cells (four 24 px tiles each), a land-cover table. Read only."""
    return make_root(tmp_path_factory.mktemp("majortom"), CELLS, size=48, landcover=LANDCOVER)
