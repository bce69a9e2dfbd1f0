"""Fixtures of the evaluation tests: a seeded tiny encoder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import terrafm

# The suite runs with --import-mode=importlib: make this folder's layout writers importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def tiny_model() -> terrafm.TerraFM:
    torch.manual_seed(0)
    return terrafm.create_model("terrafm_tiny").eval()
