"""Export the encoder for serving: ONNX and ``torch.export`` (docs/design.md, "What users need").

The exported program takes one normalised tensor (B, C, H, W) per sensor, in the order given at
export (one sensor = the published single-sensor path, several = cross-attention fusion with all
sensors present), and returns ``cls`` (B, D) and ``patch_tokens`` (B, N, D), the model's
``x_norm_clstoken`` and ``x_norm_patchtokens``. The batch size is dynamic; height and width are
fixed at export, because the position embedding is resized for one patch grid (docs/design.md, "Encoder and checkpoint layout").

Both formats carry a ``terrafm`` JSON description: sensors, band order, normalisation statistics
and units, input size, patch size, model name, so a served model says what input it expects
(docs/design.md, "Sensors and units"). Every export is checked against the PyTorch model on random input.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from terrafm.models import TerraFM
from terrafm.outputs import atomic_write
from terrafm.sensors import get_sensor

__all__ = [
    "ExportCheck",
    "ServingEncoder",
    "check_onnx",
    "check_torch_export",
    "export_onnx",
    "export_torch",
    "serving_metadata",
]

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("cls", "patch_tokens")
# Largest batch the dynamic batch dimension accepts.
MAX_BATCH = 4096


class ServingEncoder(nn.Module):
    """The encoder with positional inputs, one per sensor, for exporters.

    Args:
        model: a TerraFM encoder.
        sensors: sensor keys in input order.
    """

    def __init__(self, model: TerraFM, sensors: Sequence[str]):
        super().__init__()
        if not sensors or len(set(sensors)) != len(sensors):
            raise ValueError(f"give each sensor once, got {list(sensors)}")
        for s in sensors:
            get_sensor(s)
        self.model = model
        self.sensors = list(sensors)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.forward_features(dict(zip(self.sensors, xs)))
        return out["x_norm_clstoken"], out["x_norm_patchtokens"]  # (B, D), (B, N, D)


def serving_metadata(
    model: TerraFM, sensors: Sequence[str], height: int, width: int, model_name: str
) -> dict[str, object]:
    """The description stored with an exported model."""
    return {
        "format": "terrafm-serving/1",
        "model_name": model_name,
        "embed_dim": model.embed_dim,
        "patch_size": model.patch_size,
        "input_height": height,
        "input_width": width,
        "outputs": {
            "cls": "(B, D) normed CLS",
            "patch_tokens": "(B, N, D) normed patch tokens, N = H/16 * W/16 row-major",
        },
        "inputs": [
            {
                "name": s,
                "bands": list(get_sensor(s).band_names),
                "unit": get_sensor(s).unit,
                "normalization": get_sensor(s).stats.to_dict(),
                "shape": ["B", get_sensor(s).num_bands, height, width],
            }
            for s in sensors
        ],
    }


def _example(
    model: TerraFM, sensors: Sequence[str], height: int, width: int, batch: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    if height % model.patch_size or width % model.patch_size or height <= 0 or width <= 0:
        raise ValueError(
            f"export size must be positive multiples of {model.patch_size}, got {height} x {width}"
        )
    g = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, get_sensor(s).num_bands, height, width, generator=g) for s in sensors
    )


def _dynamic_batch(n: int) -> tuple[tuple[dict[int, object], ...]]:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return (tuple({0: batch} for _ in range(n)),)


def export_torch(
    model: TerraFM,
    sensors: Sequence[str],
    path: str | Path,
    height: int = 224,
    width: int = 224,
    model_name: str = "terrafm",
) -> Path:
    """Write a ``torch.export`` program (``.pt2``), with the description as ``terrafm.json``."""
    model = model.eval()
    wrapper = ServingEncoder(model, sensors).eval()
    args = _example(model, sensors, height, width, batch=2)
    ep = torch.export.export(wrapper, args, dynamic_shapes=_dynamic_batch(len(args)))
    meta = json.dumps(serving_metadata(model, sensors, height, width, model_name))
    path = Path(path)
    buf = io.BytesIO()  # the archive writer wants a .pt2 name or a buffer, not our temp name
    torch.export.save(ep, buf, extra_files={"terrafm.json": meta})
    with atomic_write(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def export_onnx(
    model: TerraFM,
    sensors: Sequence[str],
    path: str | Path,
    height: int = 224,
    width: int = 224,
    model_name: str = "terrafm",
    opset: int = 18,
) -> Path:
    """Write an ONNX model (inputs named by sensor), with the description in its metadata."""
    import onnx

    model = model.eval()
    wrapper = ServingEncoder(model, sensors).eval()
    args = _example(model, sensors, height, width, batch=2)
    path = Path(path)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        # Every input shares the one batch Dim, which the exporter reports as a naming clash.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=list(sensors),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=_dynamic_batch(len(args)),
            dynamo=True,
            opset_version=opset,
            verbose=False,
        )
        assert program is not None
        proto = program.model_proto
        meta = serving_metadata(model, sensors, height, width, model_name)
        entry = proto.metadata_props.add()
        entry.key, entry.value = "terrafm", json.dumps(meta)
        onnx.save_model(proto, str(tmp))
    onnx.checker.check_model(str(path))
    return path


@dataclass
class ExportCheck:
    """Largest absolute differences between an exported program and PyTorch."""

    cls: float
    patch_tokens: float
    batch: int

    def ok(self, atol: float) -> bool:
        return max(self.cls, self.patch_tokens) <= atol


def _compare(
    run: Callable[[tuple[torch.Tensor, ...]], tuple[np.ndarray, np.ndarray]],
    model: TerraFM,
    sensors: Sequence[str],
    height: int,
    width: int,
    batch: int,
) -> ExportCheck:
    """Feed one random input to an exported program (``run``: the per-sensor tensors -> its CLS
    and patch tokens) and to the PyTorch model, and measure how far the outputs differ."""
    args = _example(model, sensors, height, width, batch, seed=1)
    cls, tokens = run(args)
    with torch.no_grad():
        ref_cls, ref_tokens = ServingEncoder(model.eval(), sensors)(*args)
    return ExportCheck(
        float(np.abs(cls - ref_cls.numpy()).max()),
        float(np.abs(tokens - ref_tokens.numpy()).max()),
        batch,
    )


def check_onnx(
    path: str | Path,
    model: TerraFM,
    sensors: Sequence[str],
    height: int,
    width: int,
    batch: int = 3,
) -> ExportCheck:
    """Run the ONNX file with onnxruntime on random input and compare with the PyTorch model.

    ``batch`` differs from the export's example batch (2) on purpose: it tests the dynamic axis.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(args: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        cls, tokens = sess.run(list(OUTPUT_NAMES), {s: a.numpy() for s, a in zip(sensors, args)})
        return cls, tokens

    return _compare(run, model, sensors, height, width, batch)


def check_torch_export(
    path: str | Path,
    model: TerraFM,
    sensors: Sequence[str],
    height: int,
    width: int,
    batch: int = 3,
) -> ExportCheck:
    """Load a ``.pt2`` program and compare it with the PyTorch model on random input."""
    program = torch.export.load(str(path)).module()

    def run(args: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            cls, tokens = program(*args)
        return cls.numpy(), tokens.numpy()

    return _compare(run, model, sensors, height, width, batch)
