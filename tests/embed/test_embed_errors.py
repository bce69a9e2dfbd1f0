"""`terrafm embed` failures a user can cause, through the real CLI: one line naming the path and
the cause, exit code 1, no traceback, and no earlier output changed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from embed_fixtures import copy_raster

import terrafm.outputs
from terrafm.checkpoint import save_weights
from terrafm.cli import main
from terrafm.embed.writer import EmbeddingWriter


@pytest.fixture(scope="module")
def scene(tiny, floods, tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    ckpt = save_weights(tiny, d / "tiny.safetensors", "terrafm_tiny")
    s2 = copy_raster(floods["s2_l1c"], d / "s2.tif", lambda x: x[:, :64, :64].copy())
    return ["embed", "--input", f"s2_l2a={s2}", "--checkpoint", str(ckpt), "--window", "64"]


def _args(scene, out: Path, *more: str) -> list[str]:
    return [*scene, "--no-progress", "--boa-offset", "no", "--out", str(out), *more]


def _err(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def read_only(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """Writes under ``folder`` fail as on a read-only mount (root ignores chmod)."""
    real = terrafm.outputs._probe

    def probe(target: Path) -> None:
        if Path(target).resolve().is_relative_to(folder.resolve()):
            raise OSError(code, os.strerror(code), str(target))
        real(target)

    monkeypatch.setattr(terrafm.outputs, "_probe", probe)


@pytest.mark.parametrize(
    ("flag", "code", "cause"),
    [
        ("--out", errno.EROFS, "read-only file system"),
        ("--table", errno.EACCES, "permission denied"),
        ("--preview", errno.EROFS, "read-only file system"),
    ],
)
def test_unwritable_output_folder(scene, tmp_path, monkeypatch, capsys, flag, code, cause):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("mine")
    target = {"--out": "o.tif", "--table": "o.parquet", "--preview": "o.png"}[flag]
    out = ro / "o.tif" if flag == "--out" else tmp_path / "o.tif"
    more = [] if flag == "--out" else [flag, str(ro / target)]
    read_only(monkeypatch, ro, code)
    assert main(_args(scene, out, *more)) == 1
    assert _err(capsys) == [f"terrafm embed: error: cannot write {flag} {ro}: {cause}"]
    assert sorted(p.name for p in ro.iterdir()) == ["keep.txt"]
    assert not out.exists()  # checked before the first window: nothing was started


@pytest.mark.parametrize("flag", ["--table", "--preview"])
def test_existing_table_or_preview_is_not_overwritten(scene, tmp_path, capsys, flag):
    other = tmp_path / ("other.parquet" if flag == "--table" else "other.png")
    other.write_bytes(b"another run's file")
    assert main(_args(scene, tmp_path / "o.tif", flag, str(other))) == 1
    assert _err(capsys) == [
        f"terrafm embed: error: {flag} {other} already exists; pass --overwrite to replace it"
    ]
    assert other.read_bytes() == b"another run's file" and not (tmp_path / "o.tif").exists()
    assert main(_args(scene, tmp_path / "o.tif", flag, str(other), "--overwrite")) == 0
    assert other.read_bytes() != b"another run's file"


def test_rerun_of_a_finished_run_is_up_to_date(scene, tmp_path, monkeypatch, capsys):
    args = _args(scene, tmp_path / "o.tif", "--table", str(tmp_path / "o.parquet"))
    args += ["--preview", str(tmp_path / "o.png")]
    assert main(args) == 0
    before = _snapshot(tmp_path)
    read_only(monkeypatch, tmp_path)  # nothing to write: a read-only copy is fine
    assert main(args) == 0 and "up-to-date" in capsys.readouterr().out
    assert _snapshot(tmp_path) == before
    for name in ("o.parquet", "o.png", "o.tif"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize("how", ["enospc", "gdal"])
def test_full_disk_while_writing_windows(scene, tmp_path, monkeypatch, capsys, how):
    """ENOSPC, or GDAL's errno-less ``Write failed`` on a nearly full disk: said in words."""
    from rasterio.errors import RasterioIOError

    (tmp_path / "keep.txt").write_text("mine")
    out = tmp_path / "o.tif"

    def full(self, w, block):
        if how == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise RasterioIOError("Write failed")

    monkeypatch.setattr(EmbeddingWriter, "write", full)
    monkeypatch.setattr(terrafm.outputs, "_free_bytes", lambda folder: 0)
    assert main(_args(scene, out)) == 1
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith(
        f"terrafm embed: error: cannot write {out}: no space left on device"
    ), err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_stale_temporaries_of_a_killed_run_are_removed(scene, tmp_path):
    stale = [tmp_path / ".o.parquet.x1y2.tmp", tmp_path / ".o.tif.progress.json.abc.tmp"]
    for p in stale:
        p.write_bytes(b"")
    other = tmp_path / ".unrelated.txt.abc.tmp"
    other.write_bytes(b"")
    assert main(_args(scene, tmp_path / "o.tif", "--table", str(tmp_path / "o.parquet"))) == 0
    assert not any(p.exists() for p in stale) and other.exists()
