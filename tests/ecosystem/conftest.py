"""Fixtures of the ecosystem tests: a deterministic tiny encoder, its files, a clean registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import terrafm
from terrafm import weights
from terrafm.weights import FUSION_KEYS, save_published, save_weights

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny(deterministic) -> terrafm.TerraFM:
    """terrafm_tiny with deterministic, non-trivial weights (eval mode; do not modify)."""
    return deterministic(terrafm.create_model("terrafm_tiny")).eval()


@pytest.fixture(scope="session")
def tiny_files(tiny, tmp_path_factory) -> dict[str, Path]:
    """The tiny encoder as a published-layout .pth and a terrafm .safetensors (read-only)."""
    d = tmp_path_factory.mktemp("files")
    return {
        "pth": save_published(tiny, d / "tiny.pth"),
        "safetensors": save_weights(
            tiny, d / "tiny.safetensors", "terrafm_tiny", extra={"licence": "MIT"}
        ),
    }


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Entries a test registers are removed afterwards; the built-ins stay untouched."""
    before = set(weights.list_weights())
    defaults = dict(weights.registry._DEFAULTS)
    yield
    for name in set(weights.list_weights()) - before:
        weights.unregister_weights(name)
    weights.registry._DEFAULTS.clear()
    weights.registry._DEFAULTS.update(defaults)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Identical encoder parameters (fusion ones excepted: a published .pth lacks them)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if k not in FUSION_KEYS:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.fixture
def assert_same() -> Callable[..., None]:
    """``assert_same(a, b)``: both encoders hold the same loaded weights."""
    return _same_weights
