"""``terrafm info``: the model variants and sensors, or what a checkpoint holds."""

from __future__ import annotations

import argparse
import json

from terrafm.models.zoo import list_models, model_config
from terrafm.sensors import SENSORS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", nargs="?", help="a .safetensors or published .pth file to describe"
    )


def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        from terrafm.weights.checkpoint import read_metadata

        if str(args.checkpoint).endswith(".safetensors"):
            print(json.dumps(read_metadata(args.checkpoint), indent=2))
        else:
            import torch

            state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
            for k, v in state.items():
                print(f"{k}\t{tuple(v.shape)}")
        return 0
    print("models:")
    for name in list_models():
        c = model_config(name)
        print(f"  {name:15s} D={c.embed_dim:<5d} depth={c.depth:<3d} heads={c.num_heads}")
    print("sensors:")
    for key, s in SENSORS.items():
        print(f"  {key:7s} unit={s.unit:3s} bands={' '.join(s.band_names)}")
    return 0
