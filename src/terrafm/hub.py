"""Model construction for ``torch.hub`` (``hubconf.py`` at the repository root calls :func:`build`).

``torch.hub.load(<repo>, "terrafm_base", source="local", pretrained=PATH)`` is
:func:`terrafm.create_model`, so a hub user gets the same weights handling (published ``.pth``,
terrafm ``.safetensors``, registry names with sha256 verification: :mod:`terrafm.weights`) as a
library user.
"""

from __future__ import annotations

from typing import Any

from terrafm.models.vit import TerraFM
from terrafm.models.zoo import create_model
from terrafm.weights.pretrained import Pretrained

__all__ = ["build"]


def build(name: str, pretrained: Pretrained | None = None, **kwargs: Any) -> TerraFM:
    """A TerraFM encoder, optionally with weights.

    Args:
        name: model variant (``terrafm_base`` ...).
        pretrained: ``None``/``False`` (random init), a ``.pth``/``.safetensors`` path, a registry
            name or entry, or ``True`` for the variant's default registry entry.
        kwargs: registry download options (``sha256``, ``revision``, ``allow_unverified``,
            ``cache_dir``) and config overrides (``drop_path_rate`` ...), as
            :func:`terrafm.create_model` takes them.
    """
    return create_model(name, pretrained, **kwargs)
