"""``terrafm data``: the pre-flight report through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from terrafm.cli import main


def test_data_command_reports_curation_strata_and_scan(
    mt_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", str(mt_root), "--sensors", "s1", "s2_l2a", "--scan", "4"]) == 0
    out = capsys.readouterr().out
    assert "cells_paired: 5" in out and "tiles: 20" in out
    assert "10 Cfb        europe           8" in out  # two tree-cover cells, four tiles each
    assert "scan: 4 tiles" in out and "skipped 0 samples" in out
    assert "s2_l2a: normalised values in" in out
