"""Bad Major-TOM metadata through the real CLI: one line naming the file, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from terrafm.cli import main


def _copy(mt_root: Path, dst: Path) -> Path:
    shutil.copytree(mt_root, dst)
    return dst


@pytest.mark.parametrize(
    "damage", [lambda b: b[: len(b) // 2], lambda b: b"not parquet at all\n" * 20]
)
def test_corrupt_metadata_is_one_line_naming_the_file(
    mt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage
) -> None:
    root = _copy(mt_root, tmp_path / "root")
    meta = root / "S1RTC" / "metadata.parquet"
    meta.write_bytes(damage(meta.read_bytes()))
    assert main(["data", str(root), "--sensors", "s1", "s2_l2a", "--scan", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("terrafm data: error: ")
    assert f"{meta}: not a parquet file" in err[0]
    assert "Traceback" not in err[0]


def test_missing_metadata_is_one_line(
    mt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(mt_root, tmp_path / "root")
    meta = root / "S1RTC" / "metadata.parquet"
    meta.unlink()
    assert main(["data", str(root), "--sensors", "s1", "s2_l2a", "--scan", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"terrafm data: error: Major-TOM metadata not found: {meta}"]


def test_debug_prints_the_traceback(
    mt_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(mt_root, tmp_path / "root")
    (root / "S1RTC" / "metadata.parquet").write_bytes(b"junk")
    assert main(["--debug", "data", str(root), "--sensors", "s1", "s2_l2a", "--scan", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "MetadataError" in err
    assert err.strip().splitlines()[-1].startswith("terrafm data: error: ")
