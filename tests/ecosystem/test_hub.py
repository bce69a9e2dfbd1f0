"""torch.hub on a local clone: ``torch.hub.load(<repo>, "terrafm_base", source="local", ...)``."""

from __future__ import annotations

import pytest
import torch

import terrafm
from terrafm import weights
from terrafm.weights import RegistryError, UnverifiedWeightsError, Weights, sha256_file

from .conftest import REPO


def _hub(entry: str, *args, **kwargs):
    return torch.hub.load(str(REPO), entry, *args, source="local", **kwargs)


def test_hubconf_declares_every_variant():
    import importlib.util

    spec = importlib.util.spec_from_file_location("terrafm_hubconf", REPO / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = sorted(
        n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")
    )
    assert entries == sorted(terrafm.list_models())
    assert {"torch", "safetensors"} <= set(hubconf.dependencies)


def test_hub_load_with_local_weights(tiny, tiny_files, assert_same):
    for f in tiny_files.values():
        model = _hub("terrafm_tiny", pretrained=str(f))
        assert isinstance(model, terrafm.TerraFM)
        assert_same(tiny, model.eval())
    x = {"s2_l2a": torch.randn(1, 12, 32, 32)}
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), tiny(x), rtol=0, atol=0)


def test_hub_load_random_init_with_overrides():
    model = _hub("terrafm_tiny", drop_path_rate=0.1)
    assert model.cfg.drop_path_rate == 0.1 and model.embed_dim == 96
    with pytest.raises(TypeError, match="need pretrained="):
        _hub("terrafm_tiny", sha256="0" * 64)


def test_hub_load_registry_name_verifies_the_hash(tiny, tiny_files, tmp_path, assert_same):
    pth = tiny_files["pth"]
    remote = tmp_path / "remote" / "r1"
    remote.mkdir(parents=True)
    (remote / "tiny.pth").write_bytes(pth.read_bytes())
    url = "file://" + str(tmp_path / "remote") + "/{revision}/{filename}"
    weights.register_weights(
        Weights(name="terrafm_tiny.hubtest", model="terrafm_tiny", filename="tiny.pth", url=url),
        default=True,
    )
    cache = tmp_path / "cache"
    with pytest.raises(UnverifiedWeightsError):
        _hub("terrafm_tiny", pretrained=True, cache_dir=cache)
    model = _hub(
        "terrafm_tiny",
        pretrained="terrafm_tiny.hubtest",
        sha256=sha256_file(pth),
        revision="r1",
        cache_dir=cache,
    )
    assert_same(tiny, model.eval())
    with pytest.raises(RegistryError, match="not 'terrafm_base'"):
        _hub("terrafm_base", pretrained="terrafm_tiny.hubtest", sha256=sha256_file(pth))


@pytest.mark.slow
def test_hubconf_works_from_a_clone_that_is_not_installed(tiny_files, tmp_path):
    """A fresh interpreter with the editable install hidden: hubconf.py finds the clone's src/."""
    import subprocess
    import sys

    src = str(REPO / "src")
    code = (
        "import sys\n"
        f"sys.path = [p for p in sys.path if p != {src!r}]\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('terrafm') is None, 'terrafm still importable'\n"
        "import torch\n"
        f"m = torch.hub.load({str(REPO)!r}, 'terrafm_tiny', source='local', "
        f"pretrained={str(tiny_files['pth'])!r})\n"
        "import terrafm\n"
        "print(type(m).__name__, terrafm.__file__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["TerraFM", str(REPO / "src" / "terrafm" / "__init__.py")]
