"""TerraFM computes the same function as the published reference numerics (docs/design.md, "Encoder and checkpoint layout")."""

import pytest
import torch

import terrafm
from terrafm.models.reference import ReferenceTerraFM

CHANNELS = {"s1": 2, "s2_l1c": 12, "s2_l2a": 12}
ARCH = {"terrafm_tiny": (96, 4, 3), "terrafm_base": (768, 12, 12)}


def _pair(name, tmp_path, fill_deterministic):
    """Our model loaded from a published-layout .pth, and the reference loaded from the same file."""
    d, depth, heads = ARCH[name]
    ref = fill_deterministic(ReferenceTerraFM(d, depth, heads)).eval()
    path = tmp_path / "published.pth"
    torch.save(ref.state_dict(), path)
    ours = terrafm.create_model(name, pretrained=path).eval()
    return ours, ref


def _inputs(sensor, h, w, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, CHANNELS[sensor], h, w, generator=g)


def _check(ours, ref, sensor, h, w):
    x = _inputs(sensor, h, w)
    with torch.no_grad():
        outs, attn = ref.forward_all(x, sensor)
        ref_cls = ref.norm(outs[-1])[:, 0]
        depth = len(outs)
        idx = sorted({0, depth // 2, depth - 1})
        ref_layers = [ref.norm(outs[i])[:, 1:] for i in idx]
        cls = ours({sensor: x})
        layers = ours.get_intermediate_layers({sensor: x}, idx)
        att = ours.get_last_selfattention({sensor: x})
    torch.testing.assert_close(cls, ref_cls, atol=1e-4, rtol=0)
    for a, b in zip(layers, ref_layers):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(att, attn, atol=1e-5, rtol=0)
    with torch.inference_mode():  # the folded fast path
        fast = ours({sensor: x})
    torch.testing.assert_close(fast, ref_cls, atol=1e-4, rtol=0)
    return layers[0]


@pytest.mark.parametrize("size", [(224, 224), (96, 160), (112, 112), (320, 224), (48, 16)])
def test_tiny_matches_reference_all_sensors_and_sizes(tmp_path, size, deterministic):
    ours, ref = _pair("terrafm_tiny", tmp_path, deterministic)
    outs = [_check(ours, ref, s, *size) for s in ("s2_l1c", "s2_l2a")]
    assert (outs[0] - outs[1]).abs().max() > 1e-2  # L2A goes through its own stem
    _check(ours, ref, "s1", *size)


@pytest.mark.parametrize("size", [(224, 224), (160, 96)])
def test_base_matches_reference(tmp_path, size, deterministic):
    ours, ref = _pair("terrafm_base", tmp_path, deterministic)
    for s in ("s1", "s2_l1c", "s2_l2a"):
        _check(ours, ref, s, *size)


def test_pos_embed_untouched_at_224_and_interpolated_otherwise():
    m = terrafm.create_model("terrafm_tiny")
    assert m.interpolate_pos_encoding(14, 14) is m.pos_embed
    pe = m.interpolate_pos_encoding(7, 28)  # 196 patches, but not square: interpolated
    assert pe.shape == (1, 197, 96) and not torch.equal(pe, m.pos_embed)
    # Plain check of the DINO formula: scale factor (g + 0.1) / 14, bicubic, no align_corners.
    grid = m.pos_embed[:, 1:].reshape(1, 14, 14, 96).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(
        grid, scale_factor=(7.1 / 14, 28.1 / 14), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(pe[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 196, 96))
