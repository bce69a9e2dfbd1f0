"""terratorch backbone: the feature contract (always), and terratorch's own factory (with the extra).

The contract tests need no terratorch. The ``slow`` ones import it (about 20 s) and build task models
through its registry, necks and UPerNet decoder; they skip only when the extra is not installed.
"""

from __future__ import annotations

import pytest
import torch

import terrafm
from terrafm.integrations.terratorch import (
    TerraFMBackbone,
    build_backbone,
    datamodule_stats,
    register,
)
from terrafm.models.vit import InputError
from terrafm.sensors import BandError, get_sensor

EUROSAT_ORDER = [*[f"B{i:02d}" for i in range(1, 13)], "B8A"]  # B10 inside, B8A last
STEM = list(get_sensor("s2_l1c").band_names)


def _x(c=12, h=32, w=32, seed=0):
    return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- contract
def test_tokens_and_maps_match_the_encoder(tiny):
    x = _x(h=32, w=48)
    ref = tiny.get_intermediate_layers({"s2_l2a": x}, n=tiny.dense_layers, return_class_token=True)
    with torch.no_grad():
        tokens = TerraFMBackbone(tiny)(x)
        maps = TerraFMBackbone(tiny, output="maps")(x)
    assert len(tokens) == len(maps) == len(tiny.dense_layers) == 4
    for (patches, cls), t, m in zip(ref, tokens, maps):
        assert t.shape == (2, 1 + 2 * 3, 96) and m.shape == (2, 96, 2, 3)
        torch.testing.assert_close(t[:, 0], cls, rtol=0, atol=0)
        torch.testing.assert_close(t[:, 1:], patches, rtol=0, atol=0)
        # maps are the row-major patch grid: token (r, c) is map[:, :, r, c]
        torch.testing.assert_close(m.flatten(2).transpose(1, 2), patches, rtol=0, atol=0)
    # The last dense block's CLS is the encoder's embedding.
    with torch.no_grad():
        torch.testing.assert_close(tokens[-1][:, 0], tiny({"s2_l2a": x}), rtol=0, atol=0)


def test_out_channels_and_indices(tiny):
    bb = TerraFMBackbone(tiny, out_indices=[1, -1])
    assert bb.out_indices == [1, 3] and bb.out_channels == [96, 96] and bb.patch_size == 16
    assert len(bb(_x())) == 2
    with pytest.raises(ValueError, match="out_indices"):
        TerraFMBackbone(tiny, out_indices=[4])
    with pytest.raises(ValueError, match="output must be"):
        TerraFMBackbone(tiny, output="grid")


def test_bands_are_matched_by_name(tiny):
    raw13 = _x(c=13)  # EuroSAT-MS order: B10 inside, B8A last
    stem = raw13[:, [EUROSAT_ORDER.index(b) for b in STEM]]  # plain reference permutation
    bb = TerraFMBackbone(tiny, sensor="s2_l1c", bands=EUROSAT_ORDER)
    with torch.no_grad():
        got = bb(raw13)
        want = TerraFMBackbone(tiny, sensor="s2_l1c")(stem)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    with pytest.raises(BandError, match=r"missing band\(s\) \['B8A'\]"):
        TerraFMBackbone(tiny, sensor="s2_l1c", bands=EUROSAT_ORDER[:-1])
    with pytest.raises(BandError, match=r"input has shape \(2, 12, 32, 32\).*13"):
        bb(_x(c=12))


def test_fused_modality_dict_with_terratorch_names(tiny):
    s2, s1 = _x(c=12, seed=1), _x(c=2, seed=2)
    bb = TerraFMBackbone(tiny, output="maps", bands={"S1RTC": ["VH", "VV"]})
    with torch.no_grad():
        got = bb({"S2L2A": s2, "S1RTC": s1.flip(1)})
        ref = tiny.get_intermediate_layers(
            {"s2_l2a": s2, "s1": s1}, n=tiny.dense_layers, reshape=True
        )
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    masks = {"S2L2A": torch.tensor([True, False]), "S1RTC": torch.tensor([True, True])}
    assert all(torch.isfinite(f).all() for f in bb({"S2L2A": s2, "S1RTC": s1}, masks=masks))
    with pytest.raises(InputError, match="unknown modality 'DEM'"):
        bb({"DEM": s1})
    with pytest.raises(InputError, match="given twice"):
        bb({"S1RTC": s1, "S1GRD": s1})


def test_gradients_reach_every_block(tiny_files):
    bb = build_backbone("terrafm_tiny", ckpt_path=tiny_files["pth"]).train()
    sum(f.square().mean() for f in bb(_x())).backward()
    for name, p in bb.named_parameters():
        if name.startswith(("encoder.blocks.", "encoder.norm.")) or "conv2d_s2_l2a" in name:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (
                name
            )


def test_build_backbone_weights_and_errors(tiny, tiny_files, assert_same):
    for kw in ({"ckpt_path": tiny_files["pth"]}, {"pretrained": str(tiny_files["safetensors"])}):
        assert_same(tiny, build_backbone("terrafm_tiny", **kw).encoder)
    with pytest.raises(ValueError, match="give one of"):
        build_backbone("terrafm_tiny", True, ckpt_path=tiny_files["pth"])
    bb = build_backbone("terrafm_tiny", sensor="s1", output="maps", drop_path_rate=0.1)
    assert bb.sensor == "s1" and bb.encoder.cfg.drop_path_rate == 0.1


def test_datamodule_stats_follow_the_dataset_band_order():
    means, stds = datamodule_stats("s2_l1c", EUROSAT_ORDER)
    st = get_sensor("s2_l1c").stats
    assert means[EUROSAT_ORDER.index("B8A")] == st.mean[STEM.index("B8A")]
    assert stds[EUROSAT_ORDER.index("B11")] == st.std[STEM.index("B11")]
    assert (means[EUROSAT_ORDER.index("B10")], stds[EUROSAT_ORDER.index("B10")]) == (0.0, 1.0)
    assert datamodule_stats("S1RTC") == (
        list(get_sensor("s1").stats.mean),
        list(get_sensor("s1").stats.std),
    )


class _Registry:
    """terratorch's Registry protocol: ``register`` keys by ``__name__``; ``in``; ``build``."""

    def __init__(self):
        self.items = {}

    def register(self, constructor):
        self.items[constructor.__name__] = constructor
        return constructor

    def __contains__(self, name):
        return name in self.items

    def build(self, name, *args, **kwargs):
        return self.items[name](*args, **kwargs)


def test_register_is_idempotent_and_builds(tiny_files, tiny, assert_same):
    reg = _Registry()
    assert register(reg) == terrafm.list_models()
    first = dict(reg.items)
    register(reg)
    assert reg.items == first
    bb = reg.build("terrafm_tiny", ckpt_path=tiny_files["safetensors"], out_indices=[3])
    assert isinstance(bb, TerraFMBackbone) and bb.out_channels == [96]
    assert_same(tiny, bb.encoder)


# --------------------------------------------------------------------------- with terratorch
@pytest.fixture(scope="module")
def terratorch():
    tt = pytest.importorskip(
        "terratorch", exc_type=ModuleNotFoundError, reason="the 'terratorch' extra is not installed"
    )
    register()
    return tt


@pytest.mark.slow
def test_terratorch_registry_lists_and_builds(terratorch, tiny_files, tiny, assert_same):
    from terratorch.registry import BACKBONE_REGISTRY

    for name in terrafm.list_models():
        assert name in BACKBONE_REGISTRY and f"terratorch_{name}" in BACKBONE_REGISTRY
    bb = BACKBONE_REGISTRY.build("terratorch_terrafm_tiny", ckpt_path=str(tiny_files["pth"]))
    assert_same(tiny, bb.encoder)


@pytest.mark.slow
@pytest.mark.parametrize("output,h,w", [("tokens", 64, 64), ("maps", 64, 96)])
def test_upernet_segmentation_through_the_factory(terratorch, output, h, w):
    from terratorch.models import EncoderDecoderFactory

    torch.manual_seed(0)
    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="terrafm_tiny",
        backbone_output=output,
        necks=[{"name": "ReshapeTokensToImage"}, {"name": "LearnedInterpolateToPyramidal"}],
        decoder="UperNetDecoder",
        decoder_channels=32,
        num_classes=3,
    )
    x = _x(h=h, w=w)
    out = model(x).output
    assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, h, w))).backward()
    no_grad = sorted(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)
    # Only the stems of absent sensors and the (single-sensor-unused) fusion receive nothing.
    assert all(
        "conv2d_s1" in n
        or "s2_l1c" in n
        or "s1_embed" in n
        or ".projection.q" in n
        or ".projection.key" in n
        for n in no_grad
    ), no_grad
    assert any(n.startswith("decoder.") for n, p in model.named_parameters() if p.grad is not None)


@pytest.mark.slow
def test_classification_cls_pooling_equals_the_embedding(terratorch, tiny_files, tiny):
    from terratorch.models import EncoderDecoderFactory

    model = (
        EncoderDecoderFactory()
        .build_model(
            task="classification",
            backbone="terrafm_tiny",
            backbone_ckpt_path=str(tiny_files["pth"]),
            backbone_sensor="s1",
            necks=[{"name": "AggregateTokens", "pooling": "cls"}],
            decoder="IdentityDecoder",
            num_classes=4,
        )
        .eval()
    )
    x = _x(c=2, h=32, w=32)
    with torch.no_grad():
        pooled = model.neck(model.encoder(x), image_size=(32, 32))[0]
        torch.testing.assert_close(pooled, tiny({"s1": x}), rtol=0, atol=0)
        assert model(x).output.shape == (2, 4)


@pytest.mark.slow
def test_multimodal_dict_through_the_factory(terratorch):
    from terratorch.models import EncoderDecoderFactory

    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="terrafm_tiny",
        backbone_output="maps",
        necks=[{"name": "LearnedInterpolateToPyramidal"}],
        decoder="UperNetDecoder",
        decoder_channels=16,
        num_classes=2,
    )
    out = model({"S2L2A": _x(h=48, w=48), "S1RTC": _x(c=2, h=48, w=48, seed=3)}).output
    assert out.shape == (2, 2, 48, 48) and torch.isfinite(out).all()
