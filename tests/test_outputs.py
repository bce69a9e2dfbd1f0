"""terrafm.errors and terrafm.outputs: the error kinds, causes in words, atomic writes with the
user's umask, and write checks."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import terrafm.outputs
from terrafm.errors import ConfigError, DataError, OutputError, TerraFMError, describe_os_error
from terrafm.outputs import atomic_write, check_writable, file_mode, remove_stale_temps


def test_every_project_exception_is_a_terrafm_error() -> None:
    """Every exception class defined anywhere in the package derives from TerraFMError."""
    import importlib
    import inspect
    import pkgutil

    import terrafm
    from terrafm.config import ConfigError as SchemaError
    from terrafm.data.skips import SampleError as LoaderSampleError
    from terrafm.embed import EmbedError, EmbedInterrupted
    from terrafm.eval.tasks import SampleError as EvalSampleError
    from terrafm.weights.checkpoint import CheckpointError

    found, outside = [], []
    for info in pkgutil.walk_packages(terrafm.__path__, "terrafm."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and issubclass(cls, BaseException)
                and cls.__module__ == module.__name__
            ):
                found.append(cls)
                if not issubclass(cls, TerraFMError):
                    outside.append(cls)
    # A Ctrl-C that stopped an embed run is an interruption, not an error.
    assert outside == [EmbedInterrupted]
    assert len(found) >= 19 and CheckpointError in found
    assert issubclass(SchemaError, ConfigError) and issubclass(SchemaError, ValueError)
    assert issubclass(LoaderSampleError, DataError) and issubclass(EvalSampleError, DataError)
    assert issubclass(EvalSampleError, ValueError)  # the historical base is kept
    assert issubclass(EmbedError, OutputError) and issubclass(EmbedError, RuntimeError)
    assert ConfigError("x").exit_code == 2 and DataError("x").exit_code == 1


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_in_words(code: int, words: str) -> None:
    e = OSError(code, os.strerror(code), "/data/out.tif")
    assert describe_os_error(e) == f"/data/out.tif: {words}"
    assert describe_os_error(OSError(code, os.strerror(code)), "x.parquet") == f"x.parquet: {words}"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    monkeypatch.setattr(terrafm.outputs, "_umask", umask)
    writers = {
        "a.txt": lambda p: p.write_text("x"),
        "b.pt": lambda p: torch.save({"a": torch.zeros(2)}, p),
        "c.safetensors": lambda p: save_file({"a": torch.zeros(2)}, str(p)),  # replaces the file
    }
    for name, write in writers.items():
        with atomic_write(tmp_path / name) as tmp:
            write(tmp)
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert file_mode() == 0o666 & ~umask


def test_process_umask_is_read_without_changing_it() -> None:
    terrafm.outputs._umask = None
    old = os.umask(0o027)
    try:
        assert terrafm.outputs._current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # unchanged by the read
    finally:
        os.umask(old)
        terrafm.outputs._umask = None


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"good")
    with pytest.raises(OutputError, match=r"cannot write .*ckpt\.pt: no space left on device"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_bytes() == b"good" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(KeyError):  # not a write failure: passes through unchanged
        with atomic_write(target):
            raise KeyError("bug")


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "o.tif", "--out")  # creates the folders
    assert (tmp_path / "new" / "deeper").is_dir() and not list(
        (tmp_path / "new" / "deeper").iterdir()
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"--out .*file/o\.tif: .*file is a file, not a folder"):
        check_writable(tmp_path / "file" / "o.tif", "--out")
    with pytest.raises(OutputError, match="is a folder"):
        check_writable(tmp_path / "new", "--table")


def test_remove_stale_temps_only_touches_the_targets(tmp_path: Path) -> None:
    mine = tmp_path / ".loss_curve.png.k2j3.tmp"
    other = tmp_path / ".other.png.k2j3.tmp"
    for p in (mine, other):
        p.write_bytes(b"")
    assert remove_stale_temps([tmp_path / "loss_curve.png"]) == [mine]
    assert other.exists()


def test_gdal_info_noise_is_kept_off_the_console(tmp_path: Path) -> None:
    from terrafm.cli import main

    logging.getLogger("rasterio").setLevel(logging.NOTSET)
    main(["info"])
    assert logging.getLogger("rasterio").getEffectiveLevel() == logging.WARNING
    main(["--debug", "info"])
    assert logging.getLogger("rasterio").getEffectiveLevel() == logging.DEBUG
    logging.getLogger("rasterio").setLevel(logging.NOTSET)
