"""Former home of the checkpoint formats, kept so existing imports work.

The code lives in :mod:`terrafm.weights.checkpoint` (formats), :func:`terrafm.models.load_model`
and :func:`terrafm.outputs.atomic_write`; import from there in new code.
"""

from terrafm.models.zoo import load_model
from terrafm.outputs import atomic_write
from terrafm.weights.checkpoint import *  # noqa: F403
from terrafm.weights.checkpoint import __all__ as _FORMATS

__all__ = [*_FORMATS, "atomic_write", "load_model"]
