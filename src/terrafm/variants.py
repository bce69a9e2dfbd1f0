"""The named sizes of the TerraFM family, as plain data.

Both the models (:func:`terrafm.create_model` builds a variant) and the weights registry (an entry
names the variant its file fits) read this table, so it sits below both and imports neither.
Published variants: ``terrafm_base`` and ``terrafm_large`` (docs/design.md, "Encoder and checkpoint
layout"); ``terrafm_small`` and ``terrafm_tiny`` are smaller members for CPU work and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["VARIANTS", "list_models"]

# name -> TerraFMConfig fields that differ from the defaults.
VARIANTS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        "terrafm_base": {
            "embed_dim": 768,
            "depth": 12,
            "num_heads": 12,
            "dense_layers": (3, 5, 7, 11),
        },
        # Dense taps for L follow Copernicus-Bench/DOFA (a choice; the paper names none).
        "terrafm_large": {
            "embed_dim": 1024,
            "depth": 24,
            "num_heads": 16,
            "dense_layers": (7, 11, 15, 23),
        },
        "terrafm_small": {
            "embed_dim": 384,
            "depth": 12,
            "num_heads": 6,
            "dense_layers": (3, 5, 7, 11),
        },
        # Very small: tests, CPU demos and the built-in quickstart.
        "terrafm_tiny": {"embed_dim": 96, "depth": 4, "num_heads": 3, "dense_layers": (0, 1, 2, 3)},
    }
)


def list_models() -> list[str]:
    """The variant names, sorted."""
    return sorted(VARIANTS)
