"""The identity of a model's computation: one digest of its type, configuration and weights.

Two models with the same fingerprint compute the same function, so anything derived from a model
(cached evaluation features, a resumable embedding run) records it and is reused only while it
matches.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

__all__ = ["model_fingerprint"]


def model_fingerprint(model: nn.Module) -> str:
    """Hex SHA-256 of ``model``'s class name, ``cfg`` (if any) and every state-dict tensor.

    Each tensor contributes its name, dtype, shape and raw bytes, so a cast (float32 to bfloat16)
    or a reshaped buffer changes the digest, and equal bytes of different dtypes do not collide.
    """
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
