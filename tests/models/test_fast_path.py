"""The folded inference path: exact, and correct after weights change."""

import torch

import terrafm


def test_fast_path_matches_and_follows_weight_changes(tmp_path, deterministic):
    m = deterministic(terrafm.create_model("terrafm_tiny")).eval()
    x = {"s2_l1c": torch.randn(2, 12, 48, 32)}
    with torch.no_grad():
        slow = m(x)
    with torch.inference_mode():
        fast = m(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    assert ("stem:s2_l1c", torch.float32) in m._fast._cache  # the folded path was really taken

    # load other weights: the cache must not serve the old fold
    other = terrafm.create_model("terrafm_tiny").eval()
    terrafm.weights.save_weights(other, tmp_path / "o.safetensors", "terrafm_tiny")
    terrafm.weights.load_weights(m, tmp_path / "o.safetensors")
    with torch.no_grad():
        slow2 = m(x)
    with torch.inference_mode():
        fast2 = m(x)
    torch.testing.assert_close(fast2, slow2, atol=1e-5, rtol=0)
    assert (slow2 - slow).abs().max() > 1e-3

    # in-place edit of one stem parameter is seen too
    with torch.no_grad():
        m.patch_embed.modality_embed("s2_l1c").add_(0.5)
        slow3 = m(x)
    with torch.inference_mode():
        fast3 = m(x)
    torch.testing.assert_close(fast3, slow3, atol=1e-5, rtol=0)
    assert (slow3 - slow2).abs().max() > 1e-4


def test_training_mode_never_uses_fast_path():
    m = terrafm.create_model("terrafm_tiny").train()
    with torch.inference_mode():
        m({"s1": torch.randn(1, 2, 32, 32)})
    assert m._fast._cache == {}
