"""One model fingerprint, shared by the evaluation feature cache and resumable embedding runs."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

import terrafm
from terrafm.weights import model_fingerprint


class _Cfg:
    def to_dict(self):
        return {"width": 2}


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = _Cfg()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
            self.lin.bias.fill_(0.5)


def test_fingerprint_matches_a_plain_recomputation():
    """The documented recipe, written out by hand for a two-tensor module."""
    h = hashlib.sha256()
    h.update(b"_Tiny")
    h.update(json.dumps({"width": 2}, sort_keys=True).encode())
    for name, values, shape in (("lin.bias", [0.5], "(1,)"), ("lin.weight", [1.0, -2.0], "(1, 2)")):
        h.update(name.encode())
        h.update(b"torch.float32" + shape.encode())
        h.update(torch.tensor(values, dtype=torch.float32).numpy().tobytes())
    assert model_fingerprint(_Tiny()) == h.hexdigest()


def test_fingerprint_follows_weights_dtype_and_config():
    a, b = _Tiny(), _Tiny()
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.lin.bias.add_(1e-7)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(_Tiny().to(torch.bfloat16))
    m = terrafm.create_model("terrafm_tiny")
    same_weights_other_cfg = terrafm.create_model("terrafm_tiny", drop_path_rate=0.1)
    same_weights_other_cfg.load_state_dict(m.state_dict())
    assert model_fingerprint(m) != model_fingerprint(same_weights_other_cfg)


def test_evaluation_and_embedding_use_the_same_function():
    import terrafm.embed.pipeline as pipeline
    import terrafm.eval.features as features

    assert features.model_fingerprint is model_fingerprint
    assert pipeline.model_fingerprint is model_fingerprint
