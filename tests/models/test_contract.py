"""The model contract: shapes, keys, gradients, fusion reduction, masks, bad input."""

import pytest
import torch

import terrafm
from terrafm.models import InputError, model_config

C = {"s1": 2, "s2_l1c": 12, "s2_l2a": 12}


def _x(sensors, b=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(b, C[s], h, w, generator=g) for s in sensors}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return terrafm.create_model("terrafm_tiny")


@pytest.mark.parametrize(
    "name",
    [
        "terrafm_tiny",
        "terrafm_small",
        "terrafm_base",
        pytest.param("terrafm_large", marks=pytest.mark.slow),
    ],
)
def test_contract_every_variant_and_sensor(name):
    m = terrafm.create_model(name).eval()
    cfg = model_config(name)
    d = cfg.embed_dim
    for sensors in (["s1"], ["s2_l1c"], ["s2_l2a"], ["s1", "s2_l2a"], ["s1", "s2_l1c", "s2_l2a"]):
        x = _x(sensors, b=2, h=32, w=48)
        with torch.no_grad():
            f = m.forward_features(x)
            cls = m(x)
            layers = m.get_intermediate_layers(x, cfg.dense_layers, reshape=True)
            pairs = m.get_intermediate_layers(x, 2, return_class_token=True)
            attn = m.get_last_selfattention(x)
        assert {"x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"} <= set(f)
        assert f["x_norm_clstoken"].shape == (2, d)
        assert f["x_norm_patchtokens"].shape == (2, 6, d)
        torch.testing.assert_close(cls, f["x_norm_clstoken"])
        assert len(layers) == 4 and all(t.shape == (2, d, 2, 3) for t in layers)
        assert len(pairs) == 2 and pairs[1][0].shape == (2, 6, d) and pairs[1][1].shape == (2, d)
        assert attn.shape == (2, cfg.num_heads, 7, 7)
        assert torch.isfinite(cls).all()
    # published sizes: B 113 M encoder parameters at the fusion-free layout
    # (docs/design.md, "Encoder and checkpoint layout")
    if name == "terrafm_base":
        from terrafm.weights import published_state_dict

        n = sum(v.numel() for v in published_state_dict(m).values())
        assert 112.5e6 < n < 113.5e6, n


def test_intermediate_layers_semantics(tiny):
    x = _x(["s2_l2a"])
    with torch.no_grad():
        last2 = tiny.get_intermediate_layers(x, 2, norm=False)
        by_idx = tiny.get_intermediate_layers(x, [2, 3], norm=False)
        final = tiny.forward_features(x)
        normed = tiny.get_intermediate_layers(x, 1)[0]
    for a, b in zip(last2, by_idx):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(last2[1], final["x_prenorm"][:, 1:])
    torch.testing.assert_close(normed, final["x_norm_patchtokens"])
    with pytest.raises(ValueError, match="out of range"):
        tiny.get_intermediate_layers(x, [7])
    with pytest.raises(ValueError, match="last blocks"):
        tiny.get_intermediate_layers(x, 9)


def test_attention_rows_are_distributions(tiny):
    with torch.no_grad():
        a = tiny.get_last_selfattention(_x(["s1"]))
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))


def test_every_trainable_parameter_gets_a_finite_gradient():
    m = terrafm.create_model("terrafm_tiny", drop_path_rate=0.1).train()
    for k in ("s1", "s2_l1c", "s2_l2a"):  # non-zero modality vectors so the fusion keys differ
        torch.nn.init.normal_(m.patch_embed.modality_embed(k), std=0.1)
    loss = m(_x(["s1", "s2_l1c", "s2_l2a"])).pow(2).sum()  # fusion path: every stem + fusion params
    loss = loss + m(_x(["s2_l2a"], seed=1)).pow(2).sum()  # single path
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_single_sensor_through_fusion_equals_single_path(tiny):
    x = _x(["s2_l2a"])
    with torch.no_grad():
        single = tiny.forward_features(x)["x_prenorm"]
        # the fusion path with one modality (m = 1) computes the same tokens
        z = tiny.patch_embed.tokens("s2_l2a", x["s2_l2a"])
        fused_tokens = tiny.patch_embed.projection.fuse(z[:, :, None])
        single_tokens = tiny.patch_embed.projection.single(z)
    torch.testing.assert_close(fused_tokens, single_tokens, atol=1e-5, rtol=1e-5)
    # masks that keep only one sensor for a sample give that sample's single-sensor output
    both = {"s1": _x(["s1"])["s1"], "s2_l2a": x["s2_l2a"]}
    masks = {"s1": torch.tensor([False, True]), "s2_l2a": torch.tensor([True, False])}
    with torch.no_grad():
        out = tiny(both, masks)
        only_s2 = tiny({"s2_l2a": x["s2_l2a"][:1]})
        only_s1 = tiny({"s1": both["s1"][1:]})
        fused_both = tiny(both)
    torch.testing.assert_close(out[:1], only_s2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:], only_s1, atol=1e-5, rtol=1e-5)
    assert (fused_both - out).abs().max() > 1e-4  # with both present the fusion mixes them
    del single


def test_masked_sensors_with_nan_fill_give_no_nan(tiny):
    x = _x(["s1", "s2_l1c"], b=3)
    x["s1"][0] = float("nan")
    x["s2_l1c"][2] = float("nan")
    masks = {"s1": torch.tensor([False, True, True]), "s2_l1c": torch.tensor([True, True, False])}
    tiny.train()
    out = tiny(x, masks)
    out.sum().backward()
    tiny.eval()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in tiny.parameters() if p.grad is not None)
    tiny.zero_grad()


def test_bfloat16_autocast_on_cpu(tiny):
    x = _x(["s2_l2a"], h=64, w=64)
    with torch.inference_mode():
        ref = tiny(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny(x)
    assert low.dtype in (torch.bfloat16, torch.float32)
    cos = torch.nn.functional.cosine_similarity(low.float(), ref, dim=-1)
    assert (cos > 0.99).all()


@pytest.mark.parametrize(
    ("inputs", "masks", "match"),
    [
        ({}, None, "non-empty dict"),
        ({"s2": torch.zeros(1, 12, 32, 32)}, None, "unknown sensor 's2'"),
        (
            {"s1": torch.zeros(1, 12, 32, 32)},
            None,
            r"sensor 's1': expected a tensor \(B, 2, H, W\)",
        ),
        ({"s2_l2a": torch.zeros(1, 12, 30, 32)}, None, "multiples of 16"),
        ({"s2_l2a": torch.zeros(12, 32, 32)}, None, "expected a tensor"),
        (
            {"s1": torch.zeros(1, 2, 32, 32), "s2_l2a": torch.zeros(1, 12, 48, 32)},
            None,
            "co-registered",
        ),
        (
            {"s1": torch.zeros(2, 2, 32, 32)},
            {"s2_l2a": torch.ones(2, dtype=torch.bool)},
            "none for sensor 's1'",
        ),
        (
            {"s1": torch.zeros(2, 2, 32, 32)},
            {"s1": torch.tensor([True, False])},
            r"sample\(s\) \[1\]",
        ),
        ({"s1": torch.zeros(2, 2, 32, 32)}, {"s1": torch.ones(3, dtype=torch.bool)}, "shape"),
    ],
)
def test_bad_input_errors(tiny, inputs, masks, match):
    with pytest.raises(InputError, match=match):
        tiny(inputs, masks)


def test_tensor_instead_of_dict_is_a_clear_error(tiny):
    with pytest.raises(InputError, match="dict"):
        tiny(torch.zeros(1, 12, 32, 32))  # type: ignore[arg-type]
