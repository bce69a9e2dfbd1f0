"""Former home of the checkpoint formats, kept so existing imports work.

The code lives in :mod:`terrafm.weights.checkpoint` (formats), :func:`terrafm.models.load_model`
and :func:`terrafm.atomic.atomic_write`; import from there in new code.
"""

from terrafm.atomic import atomic_write
from terrafm.models.zoo import load_model
from terrafm.weights.checkpoint import (
    FUSION_KEYS,
    CheckpointError,
    LoadReport,
    load_weights,
    published_state_dict,
    read_metadata,
    read_state_dict,
    save_published,
    save_weights,
)

__all__ = [
    "FUSION_KEYS",
    "CheckpointError",
    "LoadReport",
    "atomic_write",
    "load_model",
    "load_weights",
    "published_state_dict",
    "read_metadata",
    "read_state_dict",
    "save_published",
    "save_weights",
]
