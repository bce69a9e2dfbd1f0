"""Named TerraFM variants and :func:`create_model`.

``terrafm_base`` and ``terrafm_large`` match the published checkpoints (SPEC §2); ``terrafm_small``
and ``terrafm_tiny`` are smaller members of the family for CPU work and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from terrafm.models.vit import TerraFM, TerraFMConfig

if TYPE_CHECKING:
    from terrafm.registry import TerraFMWeights, Weights

__all__ = ["MODEL_CONFIGS", "create_model", "list_models", "model_config"]

MODEL_CONFIGS: dict[str, Callable[[], TerraFMConfig]] = {
    "terrafm_base": lambda: TerraFMConfig(768, 12, 12, dense_layers=(3, 5, 7, 11)),
    # Dense taps for L follow Copernicus-Bench/DOFA (SPEC §2, choice).
    "terrafm_large": lambda: TerraFMConfig(1024, 24, 16, dense_layers=(7, 11, 15, 23)),
    "terrafm_small": lambda: TerraFMConfig(384, 12, 6, dense_layers=(3, 5, 7, 11)),
    # Very small: tests, CPU demos and the built-in quickstart.
    "terrafm_tiny": lambda: TerraFMConfig(96, 4, 3, dense_layers=(0, 1, 2, 3)),
}


def list_models() -> list[str]:
    return sorted(MODEL_CONFIGS)


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


def create_model(
    name: str,
    pretrained: str | Path | bool | Weights | TerraFMWeights | None = None,
    **overrides: object,
) -> TerraFM:
    """Build a TerraFM encoder, optionally loading weights.

    Args:
        name: ``terrafm_base``, ``terrafm_large``, ``terrafm_small`` or ``terrafm_tiny``.
        pretrained: a published TerraFM ``.pth`` (a flat dict of tensors, loaded without running
            pickled code) or a terrafm ``.safetensors`` checkpoint with its metadata; or a
            :mod:`terrafm.registry` weights name / entry / enum member, or ``True`` for the
            variant's default entry (URL entries need a known sha256: see
            :func:`terrafm.registry.fetch_weights`).
        overrides: config fields to change (``drop_path_rate``, ``fusion_queries`` ...).
    """
    from terrafm.checkpoint import load_weights
    from terrafm.registry import resolve_pretrained

    cfg = model_config(name, **overrides)
    path = (
        None if pretrained is None or pretrained is False else resolve_pretrained(pretrained, name)
    )
    model = TerraFM(cfg)
    if path is not None:
        load_weights(model, path, model_name=name)
    return model
