"""The weights package sits below the models: no import circle, every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import terrafm.checkpoint
import terrafm.registry
import terrafm.weights

SRC = Path(__file__).resolve().parents[2] / "src"
WEIGHTS = SRC / "terrafm" / "weights"
# What terrafm.weights may import from the library: itself and the leaf modules below it.
ALLOWED = (
    "terrafm.weights",
    "terrafm.sensors",
    "terrafm.variants",
    "terrafm.outputs",
    "terrafm.errors",
)


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_weights_imports_only_leaf_modules_of_the_library():
    bad = {
        f"{p.name}: {name}"
        for p in sorted(WEIGHTS.glob("*.py"))
        for name in _imports(p)
        if name.startswith("terrafm") and not name.startswith(ALLOWED)
    }
    assert not bad, f"terrafm.weights must not import these (they import it): {sorted(bad)}"


def test_weights_loads_without_the_models_in_a_fresh_interpreter():
    """The package's __init__ is skipped (it imports the models), so only weights' own imports run."""
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('terrafm')\n"
        f"pkg.__path__ = [{str(SRC / 'terrafm')!r}]\n"
        "sys.modules['terrafm'] = pkg\n"
        "import importlib, pkgutil\n"
        "import terrafm.weights\n"
        f"for m in pkgutil.iter_modules([{str(WEIGHTS)!r}]):\n"
        "    importlib.import_module('terrafm.weights.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith('terrafm.')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    loaded = eval(r.stdout)  # a printed list of module names
    assert loaded and all(n.startswith(ALLOWED) for n in loaded), loaded
    assert "terrafm.weights.pretrained" in loaded


def test_models_use_the_weights_door():
    import terrafm.models.zoo as zoo

    assert zoo.load_pretrained is terrafm.weights.load_pretrained
    assert zoo.resolve_pretrained is terrafm.weights.resolve_pretrained


def test_old_module_paths_are_the_same_objects():
    """``terrafm.checkpoint`` / ``terrafm.registry`` (documented before the move) still work."""
    from terrafm.models import load_model
    from terrafm.outputs import atomic_write

    own = {"atomic_write": atomic_write, "load_model": load_model}
    for name in terrafm.checkpoint.__all__:
        expected = own[name] if name in own else getattr(terrafm.weights, name)
        assert getattr(terrafm.checkpoint, name) is expected, name
    for name in terrafm.registry.__all__:
        assert getattr(terrafm.registry, name) is getattr(
            terrafm.weights.registry, name, getattr(terrafm.weights, name, None)
        )
    assert {"resolve_pretrained", "load_pretrained", "Weights"} <= set(terrafm.registry.__all__)


def _all_modules() -> list[str]:
    root = SRC / "terrafm"
    out = []
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@pytest.mark.slow
def test_every_module_imports_first():
    """Each module imported first, with no terrafm module loaded yet: an import circle fails here.

    One interpreter; between modules every ``terrafm*`` entry is dropped from ``sys.modules``
    (third-party libraries stay loaded, which only saves time).
    """
    code = (
        "import importlib, sys, traceback\n"
        f"mods = {_all_modules()!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'terrafm' or k.startswith('terrafm.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        bad.append(m + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
