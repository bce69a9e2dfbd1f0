"""Shared test fixtures: the real-sample folder and deterministic weights."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # -n 2 on 2 cores: one intra-op thread per worker, or the workers oversubscribe the cores.
    torch.set_num_threads(1)
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` beside the repository (as laid out in CI)."""
    if not REAL.is_dir():
        pytest.fail(
            f"real samples not found at {REAL} (expected ../shared/data/real beside the repo)"
        )
    return REAL


def fill_deterministic(model: nn.Module, scale: float = 0.05) -> nn.Module:
    """Fill every parameter with pseudo-random values from a PCG64 stream seeded by the key's CRC,
    independent of torch's generators (which may change between releases). Weight matrices get a uniform
    spread with std 1 / sqrt(fan_in), like a trained network, so activations stay O(1); vectors
    (biases, tokens, position embeddings) get +-``scale``; norm weights 1 +- ``scale``."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            rng = np.random.Generator(np.random.PCG64(zlib.crc32(name.encode())))
            u = torch.from_numpy(rng.random(p.numel()) * 2 - 1)
            is_matrix = (
                p.ndim >= 2 and p.shape[0] > 1 and not name.endswith(("pos_embed", "queries"))
            )
            if is_matrix:
                vals = u * (3.0 / (p.numel() // p.shape[0])) ** 0.5
            else:
                vals = u * scale
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_input.weight")):
                vals = 1.0 + vals
            p.copy_(vals.reshape(p.shape).to(p.dtype))
    return model


@pytest.fixture(scope="session")
def deterministic() -> Callable[..., nn.Module]:
    return fill_deterministic
