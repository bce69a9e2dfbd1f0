"""``terrafm quickstart`` never replaces another run's report unasked, and checks ``--out`` before
any work; the pipeline itself is replaced by a recorder (the checks come before it)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

import terrafm.outputs
import terrafm.quickstart.ablation as ablation
import terrafm.quickstart.pipeline as pipeline
from terrafm.cli import main


class Started(ValueError):
    """Raised by the recorder: the pipeline was reached (the CLI reports it with exit code 2)."""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def record(out: Path, **kw: Any) -> dict[str, Any]:
        seen.append({"out": out, **kw})
        raise Started("pipeline reached")

    monkeypatch.setattr(pipeline, "run_quickstart", record)
    monkeypatch.setattr(ablation, "run_ablation_table", record)
    return seen


def _finished(out: Path, record: str, report: str, **who: Any) -> dict[str, bytes]:
    out.mkdir(parents=True)
    (out / record).write_text(json.dumps({**who, "knn_top1_pretrained": 61.5}))
    (out / report).write_text("# the report of that run\n")
    (out / "loss_curves.png").write_bytes(b"\x89PNG figure")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _qs(out: Path, *more: str) -> list[str]:
    return ["quickstart", "--preset", "micro", "--out", str(out), *more]


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def test_report_of_another_seed_is_refused_unless_overwrite(
    tmp_path: Path, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    before = _finished(out, "summary.json", "report.md", seed=1, preset="micro", ablate=[])
    assert main(_qs(out, "--seed", "2")) == 1
    assert _err(capsys) == [
        f"terrafm quickstart: error: --out {out / 'summary.json'} is the report of another run "
        "(seed 1, preset micro, ablate []); pass --overwrite to replace it, or choose another --out"
    ]
    assert _files(out) == before and calls == []  # no world, no pretraining, no log file
    assert main(_qs(out, "--seed", "2", "--ablate", "fusion")) == 1
    assert main(_qs(out, "--seed", "1", "--preset", "quickstart")) == 1  # the last --preset wins
    assert _files(out) == before and calls == []
    # --overwrite: the run goes ahead (and will replace the report when it ends).
    assert main(_qs(out, "--seed", "2", "--overwrite")) == 2
    assert [c["seed"] for c in calls] == [2]


def test_the_same_run_continues(
    tmp_path: Path, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A rerun of the finished run's own command reuses its world and pretraining (resume)."""
    out = tmp_path / "qs"
    _finished(out, "summary.json", "report.md", seed=1, preset="micro", ablate=["fusion"])
    assert main(_qs(out, "--seed", "1", "--ablate", "fusion")) == 2
    assert [(c["seed"], c["ablate"]) for c in calls] == [(1, ["fusion"])]


@pytest.mark.parametrize("content", ["{not json", '{"seed": 1}', "[1, 2]"])
def test_unreadable_summary_is_not_replaced(
    tmp_path: Path, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], content: str
) -> None:
    out = tmp_path / "qs"
    out.mkdir()
    (out / "summary.json").write_text(content)
    assert main(_qs(out, "--seed", "1")) == 1
    assert _err(capsys) == [
        f"terrafm quickstart: error: --out {out / 'summary.json'} is the report of another run "
        "(unreadable); pass --overwrite to replace it, or choose another --out"
    ]
    assert _files(out) == {"summary.json": content.encode()} and calls == []


def test_report_without_its_summary_is_refused(
    tmp_path: Path, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    out.mkdir()
    (out / "report.md").write_text("somebody's notes")
    assert main(_qs(out)) == 1
    assert _err(capsys) == [
        f"terrafm quickstart: error: --out {out / 'report.md'} already exists; "
        "pass --overwrite to replace it"
    ]
    assert _files(out) == {"report.md": b"somebody's notes"} and calls == []


def test_ablation_table_of_another_seed_is_refused(
    tmp_path: Path, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    before = _finished(out, "ablation.json", "ablation.md", seed=0, preset="micro")
    assert main(_qs(out, "--ablation-table", "--seed", "4")) == 1
    assert _err(capsys) == [
        f"terrafm quickstart: error: --out {out / 'ablation.json'} is the report of another run "
        "(seed 0, preset micro); pass --overwrite to replace it, or choose another --out"
    ]
    assert _files(out) == before and calls == []
    assert main(_qs(out, "--ablation-table", "--seed", "0")) == 2  # the same table: continues
    # The quickstart's own report beside the table is a different report: not in the way.
    assert main(_qs(out, "--seed", "4")) == 2
    assert [c["seed"] for c in calls] == [0, 4]


def test_unwritable_out_fails_before_any_work(
    tmp_path: Path,
    calls: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("mine")
    real = terrafm.outputs._probe

    def probe(target: Path) -> None:  # root ignores chmod: fail as a read-only mount would
        if Path(target).resolve().is_relative_to(ro.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(target))
        real(target)

    monkeypatch.setattr(terrafm.outputs, "_probe", probe)
    assert main(_qs(ro)) == 1
    assert _err(capsys) == [
        f"terrafm quickstart: error: cannot write --out {ro}: read-only file system"
    ]
    assert _files(ro) == {"keep.txt": b"mine"} and calls == []
