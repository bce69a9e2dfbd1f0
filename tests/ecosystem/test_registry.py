"""The weights registry: entries, sha256 verification, the cache, create_model and the CLI."""

from __future__ import annotations

import logging

import pytest
import torch

import terrafm
from terrafm import weights
from terrafm.cli import main
from terrafm.sensors import default_stats, get_sensor
from terrafm.weights import (
    CheckpointError,
    HashMismatchError,
    RegistryError,
    TerraFMWeights,
    UnverifiedWeightsError,
    Weights,
    sha256_file,
)


def _never(url, dest):
    raise AssertionError(f"nothing may be downloaded here ({url})")


def _remote(tmp_path, files, revision="abc123"):
    """A file:// 'hub': <remote>/<revision>/<filename>; returns the URL template."""
    d = tmp_path / "remote" / revision
    d.mkdir(parents=True)
    for f in files:
        (d / f.name).write_bytes(f.read_bytes())
    return "file://" + str(tmp_path / "remote") + "/{revision}/{filename}"


def _url_entry(url, path, **kw):
    return weights.register_weights(
        Weights(
            name=kw.pop("name", "terrafm_tiny.remote"),
            model="terrafm_tiny",
            filename=path.name,
            url=url,
            revision=kw.pop("revision", "abc123"),
            **kw,
        )
    )


# --------------------------------------------------------------------------- built-in entries
def test_published_entries_record_source_and_preprocessing():
    b = weights.get_weights("terrafm_base.published")
    assert weights.get_weights("TerraFM-B") is b is TerraFMWeights.TERRAFM_B.value
    assert b.model == "terrafm_base" and b.filename == "TerraFM-B.pth" and b.format == "pth"
    assert b.resolved_url() == "https://huggingface.co/MBZUAI/TerraFM/resolve/main/TerraFM-B.pth"
    assert b.resolved_url("0123abc").endswith("/resolve/0123abc/TerraFM-B.pth")
    assert b.sha256 is None and b.revision is None  # unknown: never invented
    assert b.sensors == ("s1", "s2_l1c", "s2_l2a") and b.patch_size == 16 and b.img_size == 224
    assert b.bands["s2_l2a"] == get_sensor("s2_l2a").band_names and b.bands["s1"] == ("VV", "VH")
    assert b.units == {"s1": "dB", "s2_l1c": "DN", "s2_l2a": "DN"}
    meta = b.to_dict()
    for s, st in default_stats().items():
        assert meta["normalization"][s]["mean"] == st["mean"]
    assert "MBZUAI/TerraFM" in b.licence
    large = weights.get_weights(TerraFMWeights.TERRAFM_L)
    assert large.model == "terrafm_large" and large.filename == "TerraFM-L.pth"
    assert weights.list_weights("terrafm_large") == ["terrafm_large.published"]


def test_unknown_names_and_bad_entries_are_clear():
    with pytest.raises(RegistryError, match=r"unknown weights 'nope'.*terrafm_base\.published"):
        weights.get_weights("nope")
    with pytest.raises(RegistryError, match="exactly one of url= and path="):
        Weights(name="x", model="terrafm_tiny", filename="x.pth")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        Weights(name="x", model="terrafm_tiny", filename="x.pth", path="/x", sha256="abc")
    with pytest.raises(RegistryError, match="unknown model 'vit_h'"):
        weights.register_weights(Weights(name="x", model="vit_h", filename="x.pth", path="/x"))


def test_weights_normalize_applies_the_entry_statistics():
    w = weights.get_weights("terrafm_base.published")
    raw = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8) * 3.0 - 50.0  # VV, VH dB
    st = get_sensor("s1").stats
    expected = torch.stack([(raw[i] - st.mean[i]) / st.std[i] for i in range(2)])
    torch.testing.assert_close(w.normalize(raw, "s1"), expected)
    # Bands given by name in another order are put back in stem order.
    torch.testing.assert_close(w.normalize(raw.flip(0), "s1", ["VH", "VV"]), expected)


# --------------------------------------------------------------------------- refusal and hashes
def test_url_without_hash_is_refused_before_any_download(tmp_path):
    with pytest.raises(UnverifiedWeightsError, match=r"TerraFM-B\.pth.*sha256=.*allow_unverified"):
        weights.fetch_weights("TerraFM-B", cache_dir=tmp_path, fetcher=_never)
    with pytest.raises(UnverifiedWeightsError):
        terrafm.create_model(
            "terrafm_tiny", pretrained=_url_entry("file:///x/{filename}", tmp_path / "t.pth")
        )
    assert not any(tmp_path.rglob("*.pth"))


def test_download_verifies_caches_and_loads(tiny, tiny_files, tmp_path, assert_same):
    pth = tiny_files["pth"]
    url = _remote(tmp_path, [pth])
    digest = sha256_file(pth)
    w = _url_entry(url, pth, sha256=digest.upper())  # hashes are case-insensitive
    cache = tmp_path / "cache"
    path = weights.fetch_weights(w, cache_dir=cache)
    assert path == cache / "terrafm_tiny.remote" / "abc123" / "tiny.pth"
    assert sha256_file(path) == digest
    assert not list(path.parent.glob(".*tmp"))
    # A second fetch uses the cache (the fetcher would fail).
    assert weights.fetch_weights(w, cache_dir=cache, fetcher=_never) == path
    model = terrafm.create_model("terrafm_tiny")
    report = weights.load_pretrained(model, "terrafm_tiny", "terrafm_tiny.remote", cache_dir=cache)
    assert report.path == str(path) and report.initialised  # fusion keys absent from a .pth
    assert_same(tiny, model.eval())


def test_pinned_revision_is_the_one_downloaded(tiny_files, tmp_path):
    pth = tiny_files["pth"]
    url = _remote(tmp_path, [pth], revision="c0ffee")
    seen = []

    def fetcher(u, dest):
        seen.append(u)
        dest.write_bytes(pth.read_bytes())

    w = _url_entry(url, pth, revision=None, sha256=sha256_file(pth))
    weights.fetch_weights(w, revision="c0ffee", cache_dir=tmp_path / "c", fetcher=fetcher)
    assert seen == [url.format(revision="c0ffee", filename="tiny.pth")]
    assert (tmp_path / "c" / "terrafm_tiny.remote" / "c0ffee" / "tiny.pth").is_file()


def test_download_with_wrong_hash_is_discarded(tiny_files, tmp_path):
    pth = tiny_files["pth"]
    w = _url_entry(_remote(tmp_path, [pth]), pth, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(HashMismatchError) as e:
        weights.fetch_weights(w, cache_dir=cache)
    msg = str(e.value)
    assert "tiny.pth" in msg and "0" * 64 in msg and sha256_file(pth) in msg
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing left in the cache


def test_corrupted_cache_file_is_detected(tiny_files, tmp_path):
    pth = tiny_files["pth"]
    digest = sha256_file(pth)
    w = _url_entry(_remote(tmp_path, [pth]), pth, sha256=digest)
    path = weights.fetch_weights(w, cache_dir=tmp_path / "cache")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: the sidecar no longer vouches for it
    with pytest.raises(
        HashMismatchError, match=rf"{path}.*expected {digest}, got [0-9a-f]{{64}}.*delete"
    ):
        weights.fetch_weights(w, cache_dir=tmp_path / "cache", fetcher=_never)


def test_allow_unverified_loads_and_logs_the_digest(
    tiny, tiny_files, tmp_path, caplog, assert_same
):
    pth = tiny_files["pth"]
    w = _url_entry(_remote(tmp_path, [pth]), pth)
    with caplog.at_level(logging.WARNING):
        path = weights.fetch_weights(w, cache_dir=tmp_path / "c", allow_unverified=True)
    assert sha256_file(pth) in caplog.text and "UNVERIFIED" in caplog.text
    assert_same(tiny, terrafm.create_model("terrafm_tiny", pretrained=path).eval())


def test_user_hash_conflicting_with_the_entry_is_an_error(tiny_files, tmp_path):
    pth = tiny_files["pth"]
    w = _url_entry(_remote(tmp_path, [pth]), pth, sha256=sha256_file(pth))
    with pytest.raises(RegistryError, match="differs from the registered"):
        weights.fetch_weights(w, sha256="1" * 64, cache_dir=tmp_path, fetcher=_never)


def test_local_path_entry_is_verified(tiny_files):
    pth = tiny_files["pth"]
    w = Weights(name="t.local", model="terrafm_tiny", filename="tiny.pth", path=str(pth))
    assert weights.fetch_weights(w) == pth
    assert weights.fetch_weights(w, sha256=sha256_file(pth)) == pth
    with pytest.raises(HashMismatchError, match=r"tiny\.pth.*'t\.local'.*expected 2{64}"):
        weights.fetch_weights(w, sha256="2" * 64)
    gone = Weights(name="t.gone", model="terrafm_tiny", filename="x.pth", path=str(pth) + ".x")
    with pytest.raises(RegistryError, match="file not found"):
        weights.fetch_weights(gone)


# --------------------------------------------------------------------------- own checkpoints
def test_registered_checkpoint_describes_itself_and_loads(tiny, tiny_files, assert_same):
    st = tiny_files["safetensors"]
    w = weights.register_checkpoint(st, default=True)
    assert w.name == "terrafm_tiny.tiny" and w.model == "terrafm_tiny" and w.format == "safetensors"
    assert w.path == str(st.resolve()) and w.licence == "MIT" and w.patch_size == 16
    assert w.stats["s2_l2a"] == get_sensor("s2_l2a").stats
    assert w.bands["s2_l1c"] == get_sensor("s2_l1c").band_names
    assert_same(tiny, terrafm.create_model("terrafm_tiny", pretrained="terrafm_tiny.tiny").eval())
    assert_same(tiny, terrafm.create_model("terrafm_tiny", pretrained=w).eval())
    assert_same(tiny, terrafm.create_model("terrafm_tiny", pretrained=True).eval())
    with pytest.raises(RegistryError, match=r"for 'terrafm_tiny', not 'terrafm_small'"):
        weights.load_pretrained(terrafm.create_model("terrafm_tiny"), "terrafm_small", w.name)


def test_create_model_paths_and_names(tiny, tiny_files, assert_same):
    assert_same(
        tiny, terrafm.create_model("terrafm_tiny", pretrained=str(tiny_files["pth"])).eval()
    )
    untouched = terrafm.create_model("terrafm_tiny", pretrained=False)
    assert untouched.cls_token.abs().sum() != tiny.cls_token.abs().sum()
    with pytest.raises(RegistryError, match="neither a file nor a registered weights name"):
        terrafm.create_model("terrafm_tiny", pretrained="terrafm_tiny.nothing")
    with pytest.raises(RegistryError, match="no default weights for 'terrafm_small'"):
        weights.load_pretrained(untouched, "terrafm_small", True)
    with pytest.raises(CheckpointError, match="not found"):
        terrafm.create_model("terrafm_tiny", pretrained="missing.pth")


# --------------------------------------------------------------------------- command line
def test_cli_list_show_hash_verify_fetch(tiny_files, capsys):
    st = tiny_files["safetensors"]
    assert main(["weights", "list", "--register", str(st)]) == 0
    out = capsys.readouterr().out
    assert (
        "terrafm_base.published" in out and "sha256 unknown" in out and "terrafm_tiny.tiny" in out
    )
    assert main(["weights", "show", str(st)]) == 0
    assert '"model": "terrafm_tiny"' in capsys.readouterr().out
    digest = sha256_file(st)
    assert main(["weights", "hash", str(st)]) == 0
    assert capsys.readouterr().out.split()[0] == digest
    assert main(["weights", "verify", str(st), "--sha256", digest]) == 0
    assert main(["weights", "verify", str(st), "--sha256", "f" * 64]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main(["weights", "fetch", "TerraFM-L"]) == 2
    assert "--allow-unverified" in capsys.readouterr().err
