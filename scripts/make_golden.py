"""Regenerate the golden tensors of terrafm_tiny (tests/models/golden/terrafm_tiny.safetensors).

Run only when the model's numerics change on purpose; commit the result with a message saying why.
Weights come from the tests' RNG-free ``fill_deterministic``; inputs from a fixed numpy PCG64 stream.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "models" / "golden" / "terrafm_tiny.safetensors"


def golden_inputs() -> dict[str, torch.Tensor]:
    rng = np.random.Generator(np.random.PCG64(1234))
    return {
        "s1": torch.from_numpy(rng.standard_normal((1, 2, 32, 48)).astype(np.float32)),
        "s2_l1c": torch.from_numpy(rng.standard_normal((1, 12, 32, 48)).astype(np.float32)),
        "s2_l2a": torch.from_numpy(rng.standard_normal((1, 12, 32, 48)).astype(np.float32)),
    }


def golden_outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    x = golden_inputs()
    out = {}
    with torch.no_grad():
        for s in x:
            out[f"cls_{s}"] = model({s: x[s]})
            out[f"layer1_{s}"] = model.get_intermediate_layers({s: x[s]}, [1])[0]
        out["cls_fused"] = model(x)
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import fill_deterministic

    import terrafm

    model = fill_deterministic(terrafm.create_model("terrafm_tiny")).eval()
    tensors = {f"input_{k}": v for k, v in golden_inputs().items()}
    tensors.update(golden_outputs(model))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
