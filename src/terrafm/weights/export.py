"""A trained encoder written out as released weights: the published layout plus terrafm's own.

:func:`backbone_state` takes the encoder out of a student/teacher state dict (keys
``backbone.*``); :func:`load_backbone` puts it into a freshly built encoder, refusing any key that
does not fit; :func:`write_release` writes the pair a release consists of:

- ``<stem>.pth``: the published TerraFM layout (docs/design.md, "Encoder and checkpoint layout"),
  a flat dict of tensors without the fusion parameters, as the published files are;
- ``<stem>.safetensors``: all parameters plus self-describing metadata (docs/design.md, "Weights").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from terrafm.weights.checkpoint import CheckpointError, save_published, save_weights

__all__ = ["backbone_state", "load_backbone", "write_release"]

BACKBONE_PREFIX = "backbone."
M = TypeVar("M", bound=nn.Module)


def backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` entries of a student/teacher state dict, prefix removed."""
    n = len(BACKBONE_PREFIX)
    sub = {k[n:]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not sub:
        raise CheckpointError("state holds no 'backbone.*' weights")
    return sub


def load_backbone(model: M, state: Mapping[str, torch.Tensor], model_name: str) -> M:
    """``model`` (in eval mode) holding the backbone of ``state``; every key must fit exactly."""
    missing, unexpected = model.load_state_dict(backbone_state(state), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"backbone weights do not fit {model_name}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def write_release(
    model: nn.Module,
    out: str | Path,
    model_name: str,
    extra: Mapping[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out>.pth`` (published layout) and ``<out>.safetensors`` (with metadata).

    Args:
        model: the encoder.
        out: output path without suffix (a ``.pth`` / ``.safetensors`` suffix is replaced).
        model_name: the variant, recorded in the metadata.
        extra: more metadata for the ``.safetensors`` (training step, source checkpoint ...).
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".pth", ".safetensors") else out
    pth = save_published(model, stem.with_name(stem.name + ".pth"))
    st = save_weights(model, stem.with_name(stem.name + ".safetensors"), model_name, extra=extra)
    return pth, st
