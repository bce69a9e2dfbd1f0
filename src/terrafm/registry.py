"""Former home of the weights registry, kept so existing imports work.

The code lives in :mod:`terrafm.weights.registry` (entries) and :mod:`terrafm.weights.pretrained`
(``resolve_pretrained`` / ``load_pretrained``); import from :mod:`terrafm.weights` in new code.
"""

from terrafm.weights.pretrained import load_pretrained, resolve_pretrained
from terrafm.weights.registry import *  # noqa: F403
from terrafm.weights.registry import __all__ as _ENTRIES

__all__ = [*_ENTRIES, "load_pretrained", "resolve_pretrained"]
