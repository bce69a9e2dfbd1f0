"""Frozen features: cache, unreadable samples, flip views, bfloat16, tile tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terrafm.eval.datasets.folder import FolderSample, load_folder_task, write_folder_task
from terrafm.eval.features import extract_features, extract_patch_tokens, flip_view
from terrafm.sensors import get_sensor

S2 = list(get_sensor("s2_l2a").band_names)


def _task(tmp_path, n=6, size=32, kind="classification"):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        s2 = rng.normal(1000 + 800 * (i % 2), 200, (12, size, size)).astype(np.uint16)
        mask = rng.integers(0, 2, (size, size)).astype(np.uint8) if kind == "segmentation" else None
        samples.append(FolderSample(f"x{i}", "train" if i < n - 2 else "test", {"s2_l2a": s2},
                                    i % 2 if kind == "classification" else None, mask))  # fmt: skip
    root = write_folder_task(
        tmp_path / kind, "t", kind, ["a", "b"], {"s2_l2a": {"bands": S2}}, samples
    )
    return load_folder_task(root)


def test_cache_hit_and_miss(tmp_path, tiny_model, monkeypatch):
    ds = _task(tmp_path).dataset("train")
    cache = tmp_path / "cache"
    first = extract_features(tiny_model, ds, batch_size=3, cache_dir=cache, progress=False)
    assert first.cls.shape == (1, 4, 96) and first.ids == ["x0", "x1", "x2", "x3"]
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    calls = []
    real = tiny_model.forward_features
    monkeypatch.setattr(
        tiny_model, "forward_features", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = extract_features(tiny_model, ds, cache_dir=cache, progress=False)
    assert calls == [] and again.ids == first.ids
    torch.testing.assert_close(again.cls, first.cls)
    torch.testing.assert_close(again.labels, first.labels)
    with torch.no_grad():
        tiny_model.norm.bias.add_(0.1)
    changed = extract_features(tiny_model, ds, cache_dir=cache, progress=False)
    assert calls and len(list(cache.glob("*.safetensors"))) == 2
    assert not torch.allclose(changed.cls, first.cls)


def test_flip_views_and_direct_forward(tmp_path, tiny_model):
    ds = _task(tmp_path).dataset("train")
    one = extract_features(tiny_model, ds, progress=False)
    four = extract_features(tiny_model, ds, views=4, progress=False)
    torch.testing.assert_close(four.cls[0], one.cls[0])
    x = ds[1]["inputs"]["s2_l2a"][None]
    with torch.no_grad():
        direct = tiny_model.forward_features({"s2_l2a": flip_view(x, 3)})
    torch.testing.assert_close(four.cls[3, 1], direct["x_norm_clstoken"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        four.mean[3, 1], direct["x_norm_patchtokens"][0].mean(0), atol=1e-4, rtol=1e-4
    )
    assert four.pooled("cls+mean").shape == (4, 192)


def test_bfloat16_is_close_to_float32(tmp_path, tiny_model):
    ds = _task(tmp_path).dataset("train")
    f32 = extract_features(tiny_model, ds, progress=False)
    bf16 = extract_features(tiny_model, ds, dtype="bfloat16", progress=False)
    cos = torch.nn.functional.cosine_similarity(f32.cls[0], bf16.cls[0])
    assert cos.min() > 0.98


def test_unreadable_samples_are_skipped_counted_or_fatal(tmp_path, tiny_model):
    task = _task(tmp_path)
    (task.root / "s2_l2a" / "x2.tif").write_bytes(b"not a tiff")
    feats = extract_features(
        tiny_model, task.dataset("train", on_error="skip"), progress=False, max_skipped=0.5
    )
    assert feats.ids == ["x0", "x1", "x3"] and len(feats.skipped) == 1 and "x2" in feats.skipped[0]
    with pytest.raises(RuntimeError, match="1 of 4 samples could not be read"):
        extract_features(
            tiny_model, task.dataset("train", on_error="skip"), progress=False, max_skipped=0.0
        )
    with pytest.raises(Exception, match=r"x2\.tif"):
        extract_features(tiny_model, task.dataset("train"), progress=False)


def test_tile_tokens_equal_the_model_on_each_tile(tmp_path, tiny_model):
    task = _task(tmp_path, kind="segmentation")
    ds = task.dataset("train")
    pf = extract_patch_tokens(tiny_model, ds, tile=16, progress=False)
    assert pf.tokens.shape == (4 * 4, 1, 96) and pf.masks.shape == (16, 16, 16) and pf.grid == 1
    item = ds[0]
    tile = item["inputs"]["s2_l2a"][:, 16:32, 0:16]  # row 1, col 0 -> tile index 2
    with torch.no_grad():
        direct = tiny_model.forward_features({"s2_l2a": tile[None]})["x_norm_patchtokens"][0]
    torch.testing.assert_close(pf.tokens[2].float(), direct, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(pf.masks[2], item["mask"][16:32, 0:16])
    assert pf.ids[2] == "x0#2"
