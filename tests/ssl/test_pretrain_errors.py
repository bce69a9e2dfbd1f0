"""`terrafm pretrain` failures a user can cause: one line naming the path and the cause, the right
exit code, nothing written before the check, and earlier outputs untouched."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import terrafm.outputs
from terrafm.cli import main


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path, code: int = errno.EROFS) -> None:
    """Make new files under ``folder`` fail as on a read-only mount (root ignores chmod)."""
    real_probe = terrafm.outputs._probe

    def probe(target: Path) -> None:
        if Path(target).resolve().is_relative_to(folder.resolve()):
            raise OSError(code, os.strerror(code), str(target))
        real_probe(target)

    monkeypatch.setattr(terrafm.outputs, "_probe", probe)


def test_corrupt_major_tom_metadata(
    mini_world: Path,
    pretrain_cli: Callable[..., int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    world = tmp_path / "world"
    shutil.copytree(mini_world, world)
    meta = world / "S2L2A" / "metadata.parquet"
    meta.write_bytes(meta.read_bytes()[:-100])  # truncated
    out = tmp_path / "run"
    assert pretrain_cli(world, out, "train.max_steps=1") == 1
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith(
        f"terrafm pretrain: error: {meta}: not a parquet file, or a truncated one"
    ), err
    assert not out.exists() or not any(out.iterdir())


def test_resume_without_checkpoint(
    mini_world: Path,
    pretrain_cli: Callable[..., int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert pretrain_cli(mini_world, out, "train.max_steps=1", opts=("--resume",)) == 2
    err = _err(capsys)
    assert err == [
        f"terrafm pretrain: error: {out / 'checkpoint.pt'}: no checkpoint to resume in "
        f"train.output_dir={out} (run without --resume to start)"
    ]
    assert list(out.iterdir()) == []


def test_read_only_output_dir(
    mini_world: Path,
    pretrain_cli: Callable[..., int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    read_only(monkeypatch, out)
    assert pretrain_cli(mini_world, out, "train.max_steps=1") == 1
    err = _err(capsys)
    assert err == [
        f"terrafm pretrain: error: cannot write train.output_dir {out}: read-only file system"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_full_disk_at_checkpoint_save(
    mini_world: Path,
    pretrain_cli: Callable[..., int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """torch's zip writer reports a full disk as ``unexpected pos``: say what it means."""
    out = tmp_path / "run"
    assert pretrain_cli(mini_world, out, "train.max_steps=1") == 0
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full(obj: object, f: object, *a: object, **k: object) -> None:
        with open(f, "wb") as h:  # type: ignore[call-overload]
            h.write(b"PK\x03\x04")  # what a writer manages before the disk fills
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4352"
        )

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(terrafm.outputs, "_free_bytes", lambda folder: 4096)
    assert pretrain_cli(mini_world, out, "train.max_steps=2", opts=("--resume",)) == 1
    monkeypatch.setattr(torch, "save", real_save)
    err = _err(capsys)
    assert len(err) == 1, err
    assert err[0].startswith(
        f"terrafm pretrain: error: cannot write {out / 'checkpoint.pt'}: no space left on device"
    )
    assert "Traceback" not in err[0]
    assert (out / "checkpoint.pt").read_bytes() == before  # the last good checkpoint survives
    assert not list(out.glob(".*.tmp"))


def test_resume_removes_stale_temporaries_and_files_get_the_umask(
    mini_world: Path, pretrain_cli: Callable[..., int], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert pretrain_cli(mini_world, out, "train.max_steps=1") == 0
        stale = out / ".loss_curve.png.abc123.tmp"
        stale.write_bytes(b"")  # what a kill -9 during the plot leaves
        keep = out / ".notes.txt.abc.tmp"  # not one of the run's files
        keep.write_bytes(b"")
        assert pretrain_cli(mini_world, out, "train.max_steps=2", opts=("--resume",)) == 0
    finally:
        os.umask(old)
    assert not stale.exists() and keep.exists()
    for name in ("checkpoint.pt", "config.yaml", "loss_curve.png", "encoder.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2


def test_export_never_overwrites_unasked(
    mini_world: Path,
    pretrain_cli: Callable[..., int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    assert pretrain_cli(mini_world, run, "train.max_steps=1") == 0
    (tmp_path / "enc.pth").write_bytes(b"someone else's weights")
    assert main(["export", str(run), "--out", str(tmp_path / "enc")]) == 1
    assert _err(capsys) == [
        f"terrafm export: error: --out {tmp_path / 'enc.pth'} already exists; "
        "pass --overwrite to replace it"
    ]
    assert (tmp_path / "enc.pth").read_bytes() == b"someone else's weights"
    assert not (tmp_path / "enc.safetensors").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "enc"), "--overwrite"]) == 0
    assert (tmp_path / "enc.pth").stat().st_size > 1000


def test_serve_export_never_overwrites_unasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"deployed model")
    args = ["serve-export", "--model", "terrafm_tiny", "--sensors", "s1", "--out", str(out)]
    assert main(args) == 1
    assert _err(capsys) == [
        f"terrafm serve-export: error: --out {out} already exists; pass --overwrite to replace it"
    ]
    assert out.read_bytes() == b"deployed model"
