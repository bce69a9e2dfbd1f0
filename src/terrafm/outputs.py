"""Writing outputs safely: atomic files with the user's umask, write checks up front, clear errors.

- :func:`atomic_write` writes to a temporary file beside the target and renames it into place, so a
  crash never leaves a truncated file under the final name; the file gets the permissions a plain
  ``open(path, "w")`` would (``0666 & ~umask``), and a failed write becomes an
  :class:`~terrafm.errors.OutputError` naming the file and the cause (``no space left on device``).
- :func:`check_writable` probes every output folder before a run starts its first window or step.
- :func:`refuse_existing` applies the rule "nothing is overwritten unless asked".
- :func:`remove_stale_temps` deletes the temporaries a killed run left beside its outputs.

See docs/errors.md.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from terrafm.errors import OutputError, TerraFMError, WriteError, describe_os_error

__all__ = [
    "atomic_write",
    "check_writable",
    "file_mode",
    "output_error",
    "refuse_existing",
    "remove_stale_temps",
]

log = logging.getLogger(__name__)

_umask: int | None = None
_umask_lock = threading.Lock()
# Messages of writers that fail on a full disk without an errno (torch's zip writer, GDAL).
_WRITE_FAILED = ("unexpected pos", "file write failed", "write failed", "failed writing")
_LOW_SPACE = 64 * 2**20  # below this much free space a failed write is put down to a full disk


def _current_umask() -> int:
    """The process umask, read once (``os.umask`` can only be read by setting it)."""
    global _umask
    with _umask_lock:
        if _umask is None:
            try:  # Linux: read it without changing it
                with open("/proc/self/status") as f:
                    line = next(x for x in f if x.startswith("Umask:"))
                _umask = int(line.split()[1], 8)
            except (OSError, StopIteration, ValueError):
                _umask = os.umask(0o022)
                os.umask(_umask)
        return _umask


def file_mode() -> int:
    """The mode a new regular file gets from ``open(path, "w")``: ``0o666 & ~umask``."""
    return 0o666 & ~_current_umask()


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def output_error(path: str | os.PathLike[str], e: BaseException, what: str = "") -> WriteError:
    """A :class:`~terrafm.errors.WriteError` (an OutputError and an OSError) for a failed write of ``path``, with the cause in words.

    ``OSError`` gives its errno in words; a writer's errno-less failure (torch's ``unexpected pos``,
    GDAL's ``Write failed``) is put down to a full disk when the folder has little space left.
    """
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if isinstance(e, OSError) and e.errno is not None:
        return WriteError(f"cannot write {describe_os_error(e, label)}", e.errno)
    first = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()
    folder = path.parent if path.parent.exists() else Path.cwd()
    free = _free_bytes(folder)
    if free is not None and free < _LOW_SPACE:
        return WriteError(
            f"cannot write {label}: no space left on device ({free / 2**20:.1f} MiB free; {first})"
        )
    return WriteError(f"cannot write {label}: {first}")


def is_write_failure(e: BaseException) -> bool:
    """Whether ``e`` is a failed write (an OSError, or a writer's errno-less write failure)."""
    if isinstance(e, TerraFMError):
        return False
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in _WRITE_FAILED)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the user's umask. A failed write (``OSError``, a writer's failure on a full
    disk) raises :class:`OutputError` naming ``path``; the temporary file is always removed.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp_path = Path(tmp)
        os.fchmod(fd, file_mode())  # mkstemp creates 0600
        os.close(fd)
    except OSError as e:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise output_error(path, e) from e
    assert tmp_path is not None
    try:
        try:
            yield tmp_path
        except BaseException as e:
            if is_write_failure(e) and (
                not isinstance(e, OSError)
                or e.filename in (None, str(tmp_path), tmp_path)
                or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
            ):
                raise output_error(path, e) from e
            raise
        try:
            # Again after the block: some writers (safetensors) replace the file they are given.
            os.chmod(tmp_path, file_mode())
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except OSError as e:
            raise output_error(path, e) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _probe(folder: Path) -> None:
    """Create and delete a file in ``folder`` (raises the OSError a real write would)."""
    fd, tmp = tempfile.mkstemp(prefix=".terrafm-write-check.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def check_writable(path: str | os.PathLike[str], what: str, folder: bool = False) -> None:
    """Raise :class:`OutputError` now if ``path`` (a file, or a folder when ``folder``) cannot be
    written: its folder is not creatable, read-only, not permitted, or a file is in the way."""
    path = Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise OutputError(f"cannot write {what} {path}: is a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        _probe(target)
    except FileExistsError as e:
        raise OutputError(f"cannot write {what} {path}: {target} is a file, not a folder") from e
    except OSError as e:
        raise WriteError(f"cannot write {what} {describe_os_error(e, target)}", e.errno) from e


def refuse_existing(paths: Iterable[tuple[str, str | os.PathLike[str] | None]]) -> None:
    """Raise :class:`OutputError` for the first ``(what, path)`` that already exists."""
    for what, p in paths:
        if p is not None and Path(p).exists():
            raise OutputError(f"{what} {p} already exists; pass --overwrite to replace it")


def remove_stale_temps(targets: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left beside ``targets`` (a killed run's);
    returns what was removed. Call it only where no other process writes these targets."""
    removed = []
    for t in targets:
        t = Path(t)
        if not t.parent.is_dir():
            continue
        for p in t.parent.glob(f".{t.name}.*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    if removed:
        log.info("removed %d stale temporary file(s): %s", len(removed), [p.name for p in removed])
    return removed
