"""Checkpoint round trips, the published key layout, and load errors."""

import pickle

import pytest
import torch

import terrafm
from terrafm.models import load_model
from terrafm.models.reference import ReferenceTerraFM
from terrafm.weights import (
    FUSION_KEYS,
    CheckpointError,
    load_weights,
    read_metadata,
    save_published,
    save_weights,
)

X = {"s2_l2a": torch.randn(2, 12, 32, 32)}


def _same(a, b):
    with torch.no_grad():
        torch.testing.assert_close(a(X), b(X), atol=0, rtol=0)


def test_safetensors_round_trip_with_metadata(tmp_path, deterministic):
    m = deterministic(terrafm.create_model("terrafm_tiny")).eval()
    path = save_weights(m, tmp_path / "enc.safetensors", "terrafm_tiny", extra={"step": 7})
    meta = read_metadata(path)
    assert meta["model_name"] == "terrafm_tiny"
    assert meta["config"]["embed_dim"] == 96
    assert meta["step"] == 7
    norm = meta["normalization"]
    assert norm["s2_l2a"]["mean"][0] == 1390.5 and norm["s1"]["unit"] == "dB"
    _same(m, terrafm.create_model("terrafm_tiny", pretrained=path).eval())
    _same(m, load_model(path).eval())
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_published_layout_round_trip_keeps_fusion_init(tmp_path, deterministic):
    m = deterministic(terrafm.create_model("terrafm_tiny")).eval()
    path = save_published(m, tmp_path / "TerraFM-T.pth")
    state = torch.load(path, weights_only=True)
    assert not set(FUSION_KEYS) & set(state)
    assert "patch_embed.projection.proj1.weight" in state and "blocks.3.mlp.fc2.bias" in state
    fresh = terrafm.create_model("terrafm_tiny")
    init_queries = fresh.patch_embed.projection.queries.detach().clone()
    report = load_weights(fresh, path)
    assert sorted(report.initialised) == sorted(FUSION_KEYS)
    assert report.unexpected == []
    torch.testing.assert_close(fresh.patch_embed.projection.queries, init_queries)
    _same(m, fresh.eval())


def test_loads_a_checkpoint_written_by_the_reference_layout(tmp_path, deterministic):
    ref = deterministic(ReferenceTerraFM(96, 4, 3))
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # DDP-wrapped keys
    state["head.weight"] = torch.zeros(3)  # an extra key: reported, not fatal
    torch.save(state, tmp_path / "ref.pth")
    m = terrafm.create_model("terrafm_tiny")
    report = load_weights(m, tmp_path / "ref.pth")
    assert report.unexpected == ["head.weight"]
    torch.testing.assert_close(m.pos_embed, ref.pos_embed)


def test_shape_mismatch_names_the_key(tmp_path):
    small = terrafm.create_model("terrafm_tiny")
    save_published(small, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"key 'cls_token' has shape \(1, 1, 96\)"):
        terrafm.create_model("terrafm_small", pretrained=tmp_path / "tiny.pth")


def test_missing_key_is_an_error(tmp_path):
    state = terrafm.create_model("terrafm_tiny").state_dict()
    del state["blocks.1.attn.qkv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(
        CheckpointError, match=r"missing encoder key\(s\) \['blocks.1.attn.qkv.weight'\]"
    ):
        terrafm.create_model("terrafm_tiny", pretrained=tmp_path / "broken.pth")


def test_safetensors_for_another_architecture(tmp_path):
    save_weights(terrafm.create_model("terrafm_tiny"), tmp_path / "t.safetensors", "terrafm_tiny")
    with pytest.raises(CheckpointError, match="does not match"):
        terrafm.create_model("terrafm_tiny", depth=2, pretrained=tmp_path / "t.safetensors")


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth", "wb") as f:
        pickle.dump({"cls_token": _Evil()}, f)
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        terrafm.create_model("terrafm_tiny", pretrained="evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_not_found_and_garbage(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        terrafm.create_model("terrafm_tiny", pretrained=tmp_path / "nope.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        terrafm.create_model("terrafm_tiny", pretrained=tmp_path / "junk.safetensors")


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    m = terrafm.create_model("terrafm_tiny")
    path = save_weights(m, tmp_path / "w.safetensors", "terrafm_tiny")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("terrafm.weights.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_weights(m, path, "terrafm_tiny")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
