"""Named TerraFM variants, :func:`create_model` and :func:`load_model`.

The variants are the table of :mod:`terrafm.variants`: ``terrafm_base`` and ``terrafm_large``
match the published checkpoints (docs/design.md, "Encoder and checkpoint layout");
``terrafm_small`` and ``terrafm_tiny`` are smaller members of the family for CPU work and tests.
Weights come in through :mod:`terrafm.weights` (its ``pretrained`` door), which never imports
this package.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from terrafm.models.vit import TerraFM, TerraFMConfig
from terrafm.variants import VARIANTS, list_models
from terrafm.weights.checkpoint import read_metadata
from terrafm.weights.pretrained import (
    Pretrained,
    load_pretrained,
    resolve_pretrained,
    split_fetch_options,
)

__all__ = ["MODEL_CONFIGS", "create_model", "list_models", "load_model", "model_config"]

MODEL_CONFIGS: dict[str, Callable[[], TerraFMConfig]] = {
    name: partial(TerraFMConfig, **fields)  # type: ignore[arg-type]
    for name, fields in VARIANTS.items()
}


def model_config(name: str, **overrides: object) -> TerraFMConfig:
    """The config of a named variant, with field overrides (e.g. ``drop_path_rate=0.1``)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    cfg = MODEL_CONFIGS[name]()
    d = cfg.to_dict()
    unknown = sorted(set(overrides) - set(d))
    if unknown:
        raise ValueError(f"unknown TerraFM config key(s) {unknown} for {name!r}")
    d.update(overrides)
    return TerraFMConfig.from_dict(d)


def create_model(name: str, pretrained: Pretrained | None = None, **kwargs: Any) -> TerraFM:
    """Build a TerraFM encoder, optionally loading weights.

    Args:
        name: ``terrafm_base``, ``terrafm_large``, ``terrafm_small`` or ``terrafm_tiny``.
        pretrained: a published TerraFM ``.pth`` (a flat dict of tensors, loaded without running
            pickled code) or a terrafm ``.safetensors`` checkpoint with its metadata; or a
            :mod:`terrafm.weights` registry name / entry / enum member, or ``True`` for the
            variant's default entry (URL entries need a known sha256).
        kwargs: ``sha256``, ``revision``, ``allow_unverified``, ``cache_dir``, ``fetcher`` steer
            registry downloads (:func:`terrafm.weights.resolve_pretrained`); every other keyword
            is a config field to change (``drop_path_rate``, ``fusion_queries`` ...).
    """
    fetch, overrides = split_fetch_options(kwargs)
    cfg = model_config(name, **overrides)
    path = resolve_pretrained(pretrained, name, **fetch)  # fetched and verified before building
    model = TerraFM(cfg)
    load_pretrained(model, name, path)
    return model


def load_model(
    path: str | Path, factory: Callable[[TerraFMConfig], TerraFM] | None = None
) -> TerraFM:
    """Build the model a terrafm ``.safetensors`` checkpoint describes, and load it."""
    meta = read_metadata(path)
    cfg = TerraFMConfig.from_dict(meta["config"])  # type: ignore[arg-type]
    model = factory(cfg) if factory is not None else TerraFM(cfg)
    load_pretrained(model, str(meta.get("model_name")), Path(path))
    return model
