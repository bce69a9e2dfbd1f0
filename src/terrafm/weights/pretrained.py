"""The one door weights take into a model: ``pretrained=`` resolved to a verified file, then loaded.

``pretrained`` names the weights in any of the forms users have: a file (a published ``.pth`` or a
terrafm ``.safetensors``), a registered name or alias (``terrafm_base.published``, ``TerraFM-B``), a
:class:`~terrafm.weights.registry.Weights` entry, a
:class:`~terrafm.weights.registry.TerraFMWeights` member, or ``True`` (the variant's default entry).
Registry weights are fetched into the cache and their sha256 checked; the keywords that steer this
are :data:`FETCH_OPTIONS`, accepted under the same names by :func:`terrafm.create_model`,
``torch.hub``, the terratorch backbone and torchgeo's ``get_model``, which all pass them through
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from terrafm.weights.checkpoint import LoadReport, load_weights
from terrafm.weights.registry import (
    RegistryError,
    TerraFMWeights,
    Weights,
    default_weights,
    fetch_weights,
    get_weights,
    list_weights,
    lookup,
)

__all__ = [
    "FETCH_OPTIONS",
    "Pretrained",
    "load_pretrained",
    "resolve_pretrained",
    "split_fetch_options",
]

Pretrained = str | Path | bool | Weights | TerraFMWeights

# Keywords of :func:`terrafm.weights.registry.fetch_weights` a ``pretrained=`` caller may pass.
FETCH_OPTIONS = ("sha256", "revision", "allow_unverified", "cache_dir", "fetcher")
_SUFFIXES = (".pth", ".pt", ".safetensors")


def split_fetch_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fetch options, everything else)`` of a keyword dict (e.g. config overrides)."""
    fetch = {k: v for k, v in kwargs.items() if k in FETCH_OPTIONS}
    return fetch, {k: v for k, v in kwargs.items() if k not in FETCH_OPTIONS}


def _given(fetch_options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fetch_options) - set(FETCH_OPTIONS))
    if unknown:
        raise TypeError(f"unknown fetch option(s) {unknown}; known: {list(FETCH_OPTIONS)}")
    return {k: v for k, v in fetch_options.items() if v is not None and v is not False}


def _as_entry(pretrained: object, model_name: str) -> Weights | None:
    """The registry entry ``pretrained`` names, or ``None`` if it names a file."""
    if pretrained is True:
        return default_weights(model_name)
    if isinstance(pretrained, (Weights, TerraFMWeights)):
        return get_weights(pretrained)
    if isinstance(pretrained, str) and not Path(pretrained).exists():
        entry = lookup(pretrained)
        if entry is not None:
            return entry
        if not pretrained.endswith(_SUFFIXES) and "/" not in pretrained:
            raise RegistryError(
                f"{pretrained!r} is neither a file nor a registered weights name; "
                f"registered: {list_weights()}"
            )
    return None


def resolve_pretrained(
    pretrained: Pretrained | None, model_name: str, **fetch_options: Any
) -> Path | None:
    """The local file ``pretrained`` designates for ``model_name``, fetched and verified if needed.

    Args:
        pretrained: a file path, a registered name or alias, an entry, an enum member, ``True``
            (the variant's default entry), or ``None`` / ``False`` (no weights: returns ``None``).
        model_name: the variant it must fit (checked against the entry's model).
        fetch_options: :data:`FETCH_OPTIONS` for registry weights (``sha256``, ``revision``,
            ``allow_unverified``, ``cache_dir``, ``fetcher``); unset ones may be ``None``/``False``.

    Raises:
        TypeError: fetch options without registry weights to apply them to, or an unknown option.
        RegistryError: unknown name, or an entry made for another variant.
    """
    given = _given(fetch_options)
    if pretrained is None or pretrained is False:
        if given:
            raise TypeError(f"fetch option(s) {sorted(given)} need pretrained=")
        return None
    entry = _as_entry(pretrained, model_name)
    if entry is None:
        if given:
            raise TypeError(f"options {sorted(given)} apply to registry weights only")
        return Path(str(pretrained))
    if entry.model != model_name:
        raise RegistryError(f"weights {entry.name!r} are for {entry.model!r}, not {model_name!r}")
    return fetch_weights(entry, **given)


def load_pretrained(
    model: nn.Module, model_name: str, pretrained: Pretrained | None, **fetch_options: Any
) -> LoadReport | None:
    """Load ``pretrained`` (see :func:`resolve_pretrained`) into ``model`` in place.

    Returns:
        What loading did, or ``None`` when ``pretrained`` is ``None`` / ``False``.
    """
    path = resolve_pretrained(pretrained, model_name, **fetch_options)
    return None if path is None else load_weights(model, path, model_name=model_name)
