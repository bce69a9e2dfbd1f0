"""Former home of the weights registry, kept so existing imports work.

The code lives in :mod:`terrafm.weights.registry` (entries) and :mod:`terrafm.weights.pretrained`
(``resolve_pretrained`` / ``load_pretrained``); import from :mod:`terrafm.weights` in new code.
"""

from terrafm.weights.fetch import HashMismatchError, UnverifiedWeightsError
from terrafm.weights.pretrained import load_pretrained, resolve_pretrained
from terrafm.weights.registry import (
    PUBLISHED_REPO,
    RegistryError,
    TerraFMWeights,
    Weights,
    default_weights,
    fetch_weights,
    get_weights,
    list_weights,
    register_checkpoint,
    register_weights,
    unregister_weights,
)

__all__ = [
    "PUBLISHED_REPO",
    "HashMismatchError",
    "RegistryError",
    "TerraFMWeights",
    "UnverifiedWeightsError",
    "Weights",
    "default_weights",
    "fetch_weights",
    "get_weights",
    "list_weights",
    "load_pretrained",
    "register_checkpoint",
    "register_weights",
    "resolve_pretrained",
    "unregister_weights",
]
