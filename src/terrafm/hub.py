"""Model construction for ``torch.hub`` (``hubconf.py`` at the repository root calls :func:`build`).

``torch.hub.load(<repo>, "terrafm_base", source="local", pretrained=PATH)`` builds the encoder with
:func:`terrafm.create_model` and loads weights through :mod:`terrafm.registry`, so a hub user gets
the same file handling (published ``.pth``, terrafm ``.safetensors``, registry names with sha256
verification) as a library user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terrafm.models.vit import TerraFM
from terrafm.models.zoo import create_model
from terrafm.registry import TerraFMWeights, Weights, resolve_pretrained

__all__ = ["build"]


def build(
    name: str,
    pretrained: str | Path | bool | Weights | TerraFMWeights | None = None,
    *,
    sha256: str | None = None,
    revision: str | None = None,
    allow_unverified: bool = False,
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> TerraFM:
    """A TerraFM encoder, optionally with weights.

    Args:
        name: model variant (``terrafm_base`` ...).
        pretrained: ``None``/``False`` (random init), a ``.pth``/``.safetensors`` path, a registry
            name or entry, or ``True`` for the variant's default registry entry.
        sha256: expected digest of a registry file whose entry records none.
        revision: hub revision for an entry that pins none.
        allow_unverified: load a registry URL file whose hash is unknown.
        cache_dir: download cache (default ``$TERRAFM_CACHE`` or ``~/.cache/terrafm``).
        overrides: config fields (``drop_path_rate`` ...).
    """
    if pretrained is None or pretrained is False:
        if sha256 or revision or allow_unverified:
            raise TypeError("sha256/revision/allow_unverified need pretrained=")
        return create_model(name, **overrides)
    options: dict[str, Any] = {}
    if sha256 is not None:
        options["sha256"] = sha256
    if revision is not None:
        options["revision"] = revision
    if allow_unverified:
        options["allow_unverified"] = True
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    path = resolve_pretrained(pretrained, name, **options)  # fails before building the model
    return create_model(name, pretrained=path, **overrides)
