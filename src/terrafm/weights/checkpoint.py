"""Encoder weights on disk: published TerraFM ``.pth`` files and terrafm ``.safetensors``.

- Published checkpoints (``TerraFM-B.pth``, ``TerraFM-L.pth``) are a flat dict of tensors in the
  key layout of docs/design.md, "Encoder and checkpoint layout". They are read with
  ``torch.load(weights_only=True)``: no pickled code runs. Unexpected keys are reported, a shape
  mismatch is an error naming the key, and the fusion parameters they lack keep their
  initialisation.
- terrafm checkpoints are ``.safetensors`` whose metadata carries the model name, config, sensors
  and normalisation statistics, so the weights describe themselves (docs/design.md, "Weights").

Nothing here imports the model classes: a model is anything with ``state_dict`` /
``load_state_dict``, a ``cfg`` with ``to_dict`` / ``from_dict`` and a ``patch_size`` (a TerraFM).
Building a model from a checkpoint is :func:`terrafm.models.load_model`.

Every write goes through :func:`terrafm.outputs.atomic_write`, so a crash never leaves a truncated
file under the final name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from terrafm.errors import WeightsError
from terrafm.outputs import atomic_write
from terrafm.sensors import SENSOR_KEYS, default_stats

__all__ = [
    "FUSION_KEYS",
    "CheckpointError",
    "LoadReport",
    "load_weights",
    "published_state_dict",
    "read_metadata",
    "read_state_dict",
    "save_published",
    "save_weights",
]

log = logging.getLogger(__name__)

FORMAT = "terrafm-encoder/1"
# Parameters of the cross-attention fusion, absent from the published checkpoints
# (docs/design.md, "Fusion").
FUSION_KEYS = (
    "patch_embed.projection.queries",
    "patch_embed.projection.key.weight",
    "patch_embed.projection.query_pool.weight",
    "patch_embed.projection.query_pool.bias",
)
# Wrappers seen around encoder weights: DDP, DINO teacher/student checkpoints.
_PREFIXES = ("module.", "backbone.", "encoder.")


class CheckpointError(WeightsError, ValueError):
    """A checkpoint that cannot be loaded into the requested model."""


@dataclass
class LoadReport:
    """What loading a checkpoint did."""

    path: str
    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # absent fusion parameters
    unexpected: list[str] = field(default_factory=list)


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unsafe or corrupt pickle: never fall back to the full unpickler
        raise CheckpointError(f"{path}: cannot read as a tensor checkpoint ({e})") from e
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a TerraFM state dict)")
    return _strip_prefixes(obj)


def read_metadata(path: str | Path) -> dict[str, object]:
    """The decoded metadata of a terrafm ``.safetensors`` checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a terrafm checkpoint (metadata format {raw.get('format')!r})"
        )
    return {k: (json.loads(v) if k != "format" else v) for k, v in raw.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a published ``.pth`` (safe unpickler, wrappers stripped) or a ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_pth(path)


def _config(model: nn.Module) -> Any:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        raise CheckpointError(f"{type(model).__name__} has no cfg; expected a TerraFM encoder")
    return cfg


def load_weights(model: nn.Module, path: str | Path, model_name: str | None = None) -> LoadReport:
    """Load encoder weights into ``model`` (in place) and report what happened.

    Raises:
        CheckpointError: unreadable file, missing encoder key, shape mismatch, or a terrafm
            checkpoint made for another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
        own_cfg = _config(model)
        cfg = type(own_cfg).from_dict(meta["config"])  # fills fields older files lack
        if cfg.to_dict() != {**own_cfg.to_dict(), "drop_path_rate": cfg.drop_path_rate}:
            raise CheckpointError(
                f"{path}: made for {meta.get('model_name')} with config {cfg.to_dict()}, "
                f"which does not match the model being loaded ({model_name}: {own_cfg.to_dict()})"
            )
        state = _read_safetensors(path)
    else:
        state = _read_pth(path)
    own = model.state_dict()
    report = LoadReport(str(path))
    report.unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    report.initialised = [k for k in missing if k in FUSION_KEYS]
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path}: key {k!r} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)} "
                f"({model_name or 'this model'}; is it the right variant?)"
            )
    hard_missing = [k for k in missing if k not in FUSION_KEYS]
    if hard_missing:
        raise CheckpointError(
            f"{path}: missing encoder key(s) {hard_missing[:8]}"
            + (f" and {len(hard_missing) - 8} more" if len(hard_missing) > 8 else "")
            + f" for {model_name or 'this model'} (is it the right variant?)"
        )
    wanted = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(wanted, strict=False)
    report.loaded = sorted(wanted)
    if report.unexpected:
        log.warning(
            "%s: ignored %d unexpected key(s): %s", path, len(report.unexpected), report.unexpected
        )
    if report.initialised:
        log.info(
            "%s: fusion parameters not in checkpoint, kept at init: %s", path, report.initialised
        )
    return report


def save_weights(
    model: nn.Module,
    path: str | Path,
    model_name: str,
    extra: Mapping[str, object] | None = None,
    stats: Mapping[str, object] | None = None,
) -> Path:
    """Write ``model`` as a self-describing ``.safetensors`` checkpoint (atomically)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: terrafm checkpoints use the .safetensors suffix")
    meta: dict[str, object] = {
        "model_name": model_name,
        "config": _config(model).to_dict(),
        "sensors": list(SENSOR_KEYS),
        "normalization": dict(stats) if stats is not None else default_stats(),
        "patch_size": int(getattr(model, "patch_size", _config(model).patch_size)),
    }
    meta.update(extra or {})
    encoded = {k: json.dumps(v) for k, v in meta.items()}
    encoded["format"] = FORMAT
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=encoded)
    return path


def published_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights in the published key layout (fusion parameters left out)."""
    return {
        k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in FUSION_KEYS
    }


def save_published(model: nn.Module, path: str | Path) -> Path:
    """Write a ``.pth`` in the published TerraFM layout, loadable by anything that loads TerraFM."""
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save(published_state_dict(model), tmp)
    return path
