"""Serving exports (ONNX via onnxruntime, torch.export) compute what PyTorch computes."""

import json

import pytest
import torch

from terrafm.sensors import get_sensor
from terrafm.serving import check_onnx, check_torch_export, export_onnx, export_torch


@pytest.fixture(scope="module")
def tiny(deterministic):
    """terrafm_tiny with fixed, non-trivial weights (modality vectors and fusion included)."""
    from terrafm.models import create_model

    return deterministic(create_model("terrafm_tiny")).eval()


H, W = 32, 48  # non-square, not the 14 x 14 grid: the position embedding is resized


FUSED = pytest.param(["s2_l1c", "s1"], id="fused", marks=pytest.mark.slow)


@pytest.mark.parametrize("sensors", [pytest.param(["s2_l2a"], id="single"), FUSED])
def test_onnx_matches_pytorch(tiny, tmp_path, sensors):
    import onnx

    path = export_onnx(tiny, sensors, tmp_path / "m.onnx", H, W, model_name="terrafm_tiny")
    check = check_onnx(path, tiny, sensors, H, W, batch=3)  # batch 3: the dynamic axis
    assert check.ok(1e-4), check
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == sensors
    assert [o.name for o in proto.graph.output] == ["cls", "patch_tokens"]
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["terrafm"])
    assert [i["name"] for i in meta["inputs"]] == sensors and meta["input_height"] == H
    assert meta["inputs"][0]["normalization"]["mean"][0] == pytest.approx(
        1390.5 if sensors[0] == "s2_l2a" else 2357.1
    )


@pytest.mark.parametrize("sensors", [pytest.param(["s1"], id="single"), FUSED])
def test_torch_export_matches_pytorch(tiny, tmp_path, sensors):
    path = export_torch(tiny, sensors, tmp_path / "m.pt2", H, W)
    check = check_torch_export(path, tiny, sensors, H, W, batch=3)
    assert check.ok(1e-5), check
    extra = {"terrafm.json": ""}
    torch.export.load(str(path), extra_files=extra)
    meta = json.loads(extra["terrafm.json"])
    assert [i["bands"] for i in meta["inputs"]] == [list(get_sensor(s).band_names) for s in sensors]


def test_export_refuses_bad_sizes_and_sensors(tiny, tmp_path):
    with pytest.raises(ValueError, match="multiples of 16"):
        export_torch(tiny, ["s1"], tmp_path / "m.pt2", 30, 32)
    with pytest.raises(ValueError, match="each sensor once"):
        export_torch(tiny, ["s1", "s1"], tmp_path / "m.pt2", 32, 32)


ONNX = pytest.param("onnx", marks=pytest.mark.slow)  # the ONNX export takes seconds


@pytest.mark.parametrize("fmt", ["torch", ONNX])
def test_checks_measure_a_different_model(tiny, tmp_path, fmt):
    """A check reports the gap to the PyTorch model it is given, not a constant."""
    import copy

    if fmt == "onnx":
        path, check = export_onnx(tiny, ["s1"], tmp_path / "m.onnx", H, W), check_onnx
    else:
        path, check = export_torch(tiny, ["s1"], tmp_path / "m.pt2", H, W), check_torch_export
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        other.norm.bias += 0.5  # every output token moves by exactly 0.5
    gap = check(path, other, ["s1"], H, W, batch=2)
    assert gap.batch == 2 and not gap.ok(0.4)
    assert gap.cls == pytest.approx(0.5, abs=1e-4)
    assert gap.patch_tokens == pytest.approx(0.5, abs=1e-4)
