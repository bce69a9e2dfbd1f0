"""The raw-pixel reference encoder: its tokens against a plain loop, and the probes on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terrafm.eval.baselines import PixelEncoder, patch_majority
from terrafm.eval.features import PatchFeatures, _tiles
from terrafm.eval.segmentation import SegSettings, evaluate_patch_probe, train_patch_probe


def test_tokens_and_cls_match_a_plain_computation():
    g = torch.Generator().manual_seed(0)
    x = {
        "s2_l2a": torch.randn(2, 3, 8, 12, generator=g),
        "s1": torch.randn(2, 2, 8, 12, generator=g),
    }
    out = PixelEncoder(patch_size=4).forward_features(x)
    tok, cls = out["x_norm_patchtokens"].numpy(), out["x_norm_clstoken"].numpy()
    assert tok.shape == (2, 2 * 3, 5 * 16) and cls.shape == (2, 10)
    a = {k: v.numpy() for k, v in x.items()}
    for b in range(2):
        for i in range(2):
            for j in range(3):
                expect = np.concatenate(
                    [
                        a[s][b, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].ravel()
                        for s in ("s1", "s2_l2a")
                    ]
                )
                np.testing.assert_allclose(tok[b, 3 * i + j], expect, rtol=0, atol=0)
        both = np.concatenate([a["s1"][b], a["s2_l2a"][b]])  # sensors in name order
        np.testing.assert_allclose(cls[b, :5], both.mean((1, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cls[b, 5:], both.std((1, 2)), rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_named():
    enc = PixelEncoder()
    with pytest.raises(ValueError, match="not a multiple of the patch 16"):
        enc.forward_features({"s2_l2a": torch.zeros(1, 12, 24, 24)})
    with pytest.raises(ValueError, match="shapes differ"):
        enc.forward_features(
            {"s2_l2a": torch.zeros(1, 12, 32, 32), "s1": torch.zeros(2, 2, 32, 32)}
        )
    with pytest.raises(ValueError, match="at least one sensor"):
        enc.forward_features({})
    with pytest.raises(ValueError, match="patch_size"):
        PixelEncoder(0)


def test_patch_probe_on_pixels_recovers_a_pixel_rule():
    """A per-pixel rule (class 1 where band 0 > band 1) is linear in the raw patch: the patch probe
    on PixelEncoder tokens reproduces it almost exactly, at pixel resolution inside each patch."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 2, 32, 32, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1) * 3  # some spatial correlation
    mask = (x[:, 0] > x[:, 1]).long()
    tokens = PixelEncoder(4).forward_features({"s2_l2a": x})["x_norm_patchtokens"]
    assert tokens.shape == (48, 64, 32)  # row-major 8 x 8 patches of 2 x 4 x 4 values
    feats = PatchFeatures(  # every patch its own one-token tile
        tokens.reshape(48 * 64, 1, 32).to(torch.float16),
        _tiles(mask[:, None], 4)[:, 0],  # (48 * 64, 4, 4), the tokens' row-major order
        [f"t{i}" for i in range(48 * 64)],
    )
    n = 40 * 64
    train = PatchFeatures(feats.tokens[:n], feats.masks[:n], feats.ids[:n])
    test = PatchFeatures(feats.tokens[n:], feats.masks[n:], feats.ids[n:])
    settings = SegSettings(epochs=30, batch_size=64, lr=3e-2)
    head = train_patch_probe(train, 2, settings, patch=4, progress=False)
    res = evaluate_patch_probe(head, test, 2)
    assert res["miou"] > 90, res["miou"]


def test_patch_majority_matches_a_loop():
    g = torch.Generator().manual_seed(3)
    masks = torch.randint(0, 3, (2, 8, 12), generator=g)
    masks[0, :4, :4] = 255  # a block with no valid pixel
    masks[1, 4:, 8:] = torch.tensor([[1, 1, 255, 255]] * 2 + [[2, 2, 2, 255]] * 2)
    out = patch_majority(masks, 3, 255, patch=4)
    for b in range(2):
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                v = masks[b, i : i + 4, j : j + 4].flatten()
                v = v[v != 255]
                expect = int(np.bincount(v.numpy(), minlength=3).argmax()) if len(v) else 0
                assert (out[b, i : i + 4, j : j + 4] == expect).all(), (b, i, j)
    assert out[1, 5, 9] == 2  # 6 twos beat 4 ones; ignored pixels do not vote
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        patch_majority(torch.full((1, 4, 4), 7), 3, 255, patch=4)
    with pytest.raises(ValueError, match="multiple of the patch"):
        patch_majority(torch.zeros(1, 6, 8, dtype=torch.long), 3, patch=4)
