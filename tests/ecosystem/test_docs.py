"""docs/ecosystem.md: its python and bash blocks run, in order, in a scratch folder.

Fences: ```python / ```bash run (``terrafm`` lines go through ``terrafm.cli.main`` after bash expands
them); ```python terratorch runs when terratorch is installed (slow: its import takes ~20 s);
``` ... skip`` blocks need the published weights and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from terrafm.cli import main

from .conftest import REPO

DOC = REPO / "docs" / "ecosystem.md"
_FENCE = re.compile(r"^```(python|bash)([^\n]*)\n(.*?)^```", re.S | re.M)


def _blocks(with_terratorch: bool) -> list[tuple[str, str]]:
    out = []
    for lang, tags, body in _FENCE.findall(DOC.read_text()):
        tags = tags.split()
        if "skip" in tags or ("terratorch" in tags and not with_terratorch):
            continue
        out.append((lang, body))
    return out


def _argv(line: str, env: dict[str, str]) -> list[str]:
    """The words of a shell line after the shell's own expansion (``$(...)``, quotes)."""
    r = subprocess.run(
        ["bash", "-c", f"printf '%s\\n' {line}"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _run(blocks: list[tuple[str, str]], cwd: Path, capsys: pytest.CaptureFixture) -> None:
    """Python blocks share one namespace; ``terrafm`` lines run through the real CLI in-process."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    namespace: dict[str, object] = {"__name__": "__docs__"}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        for i, (lang, body) in enumerate(blocks):
            if lang == "python":
                exec(compile(body, f"{DOC.name}[block {i}]", "exec"), namespace)
                continue
            for line in body.splitlines():
                cmd = line.split("  #")[0].strip()
                if not cmd:
                    continue
                argv = _argv(cmd, env)
                assert argv[0] == "terrafm", f"only terrafm commands are expected here: {cmd!r}"
                rc = main(argv[1:])
                assert rc == 0, f"{cmd!r} exited {rc}:\n{capsys.readouterr().err}"
    finally:
        os.chdir(old)


def test_doc_blocks_run(tmp_path, capsys):
    blocks = _blocks(with_terratorch=False)
    assert sum(lang == "python" for lang, _ in blocks) >= 5 and any(b == "bash" for b, _ in blocks)
    _run(blocks, tmp_path, capsys)


@pytest.mark.slow
def test_doc_blocks_run_with_terratorch(tmp_path, capsys):
    pytest.importorskip(
        "terratorch", exc_type=ModuleNotFoundError, reason="the 'terratorch' extra is not installed"
    )
    _run(_blocks(with_terratorch=True), tmp_path, capsys)
