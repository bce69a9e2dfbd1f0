"""The pipeline on a CUDA device gives the CPU result (fp32) and finite, close features (bf16)."""

import copy

import numpy as np
import pytest
import rasterio
import torch

from terrafm.embed import EmbedOptions, SourceSpec, embed_scene

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _run(model, floods, out, **kw):
    specs = [SourceSpec("s2_l1c", str(floods["s2_l1c"])), SourceSpec("s1", str(floods["s1"]))]
    embed_scene(model, specs, out, options=EmbedOptions(progress=False, **kw))
    with rasterio.open(out) as src:
        return src.read()


def test_cuda_matches_cpu(tiny, floods, tmp_path):
    cpu = _run(copy.deepcopy(tiny), floods, tmp_path / "cpu.tif")
    gpu = _run(copy.deepcopy(tiny), floods, tmp_path / "gpu.tif", device="cuda", precision="fp32")
    np.testing.assert_allclose(gpu, cpu, atol=2e-3, rtol=0)
    bf16 = _run(copy.deepcopy(tiny), floods, tmp_path / "bf16.tif", device="cuda", precision="bf16")
    assert np.isfinite(bf16).all()
    a, b = bf16.reshape(bf16.shape[0], -1), cpu.reshape(cpu.shape[0], -1)
    cos = (a * b).sum(0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0)
    assert cos.min() > 0.98
