"""terrafm_tiny against committed golden tensors (regenerate only with scripts/make_golden.py)."""

from pathlib import Path

import torch
from safetensors.torch import load_file

import terrafm

GOLDEN = Path(__file__).parent / "golden" / "terrafm_tiny.safetensors"


def test_tiny_matches_golden_tensors(deterministic):
    g = load_file(str(GOLDEN))
    model = deterministic(terrafm.create_model("terrafm_tiny")).eval()
    x = {k.removeprefix("input_"): v for k, v in g.items() if k.startswith("input_")}
    with torch.no_grad():
        for s in x:
            torch.testing.assert_close(model({s: x[s]}), g[f"cls_{s}"], rtol=1e-3, atol=1e-4)
            layer = model.get_intermediate_layers({s: x[s]}, [1])[0]
            torch.testing.assert_close(layer, g[f"layer1_{s}"], rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(model(x), g["cls_fused"], rtol=1e-3, atol=1e-4)
