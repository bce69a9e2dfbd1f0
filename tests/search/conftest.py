"""Fixtures for search and change tests: a tiny model, the real flood chip embedded a few ways."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

# Under --import-mode=importlib, make the embedding tests' helper module importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "embed"))

from embed_fixtures import copy_raster

from terrafm.embed import EmbedOptions, SourceSpec, embed_scene
from terrafm.models import TerraFM, create_model

WINDOW = 64  # 8 x 8 windows over the 512 x 512 chip
# Input pixels overwritten in the "modified" copy: one 16 x 16 patch inside window (4, 2).
EDIT = (slice(272, 288), slice(144, 160))


@dataclass
class Scenes:
    """Embed outputs (GeoTIFF, table) of the flood chip: ``orig`` (S2 L1C), ``flip`` (mirrored
    left-right), ``mod`` (one patch overwritten), ``s1`` (S1 only), ``other`` (S2, other weights)."""

    root: Path
    chip: Path
    edit: tuple[slice, slice] = EDIT

    def tif(self, name: str) -> Path:
        return self.root / f"{name}.tif"

    def table(self, name: str) -> Path:
        return self.root / f"{name}.parquet"


@pytest.fixture(scope="session")
def tiny(deterministic) -> TerraFM:
    return deterministic(create_model("terrafm_tiny")).eval()


def _embed(model: TerraFM, sensor: str, path: Path, out: Path, name: str) -> None:
    opts = EmbedOptions(window=WINDOW, progress=False)
    embed_scene(
        model,
        [SourceSpec(sensor, str(path))],
        out / f"{name}.tif",
        table=out / f"{name}.parquet",
        options=opts,
        model_name="terrafm_tiny",
    )


def _edit(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[:, EDIT[0], EDIT[1]] = 3000  # a flat bright patch in every band
    return a


@pytest.fixture(scope="session")
def scenes(tiny, deterministic, real_data, tmp_path_factory) -> Scenes:
    root = tmp_path_factory.mktemp("search_scenes")
    chip = real_data / "sen1floods11-sample"
    s2 = chip / "S2" / "Spain_7370579_S2Hand.tif"
    flip = copy_raster(s2, root / "in_flip.tif", edit=lambda a: a[:, :, ::-1].copy())
    mod = copy_raster(s2, root / "in_mod.tif", edit=_edit)
    _embed(tiny, "s2_l1c", s2, root, "orig")
    _embed(tiny, "s2_l1c", flip, root, "flip")
    _embed(tiny, "s2_l1c", mod, root, "mod")
    _embed(tiny, "s1", chip / "S1" / "Spain_7370579_S1Hand.tif", root, "s1")
    other = deterministic(create_model("terrafm_tiny"))
    with torch.no_grad():
        other.cls_token.mul_(-1.0)  # a different set of weights of the same architecture
    _embed(other.eval(), "s2_l1c", s2, root, "other")
    return Scenes(root, s2)
