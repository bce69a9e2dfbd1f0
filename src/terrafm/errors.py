"""The exceptions terrafm raises for failures a user can cause, and their one-line wording.

Every project exception derives from :class:`TerraFMError` through one of four kinds:

- :class:`DataError`: an input file or sample that cannot be used (corrupt, missing, wrong layout);
- :class:`ConfigError`: a configuration or command line that cannot work (a usage error);
- :class:`WeightsError`: weights that cannot be loaded, fetched or verified;
- :class:`OutputError`: an output that cannot be written (read-only, full disk, already there).

The ``terrafm`` command catches :class:`TerraFMError` and :class:`OSError` once (``terrafm.cli``)
and prints one line naming the path and the cause, with exit code :attr:`TerraFMError.exit_code`.
The concrete classes keep their historical second base (``ValueError``, ``RuntimeError`` ...), so
code that caught those still does. See docs/errors.md.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "ConfigError",
    "DataError",
    "OutputError",
    "TerraFMError",
    "WeightsError",
    "WriteError",
    "describe_os_error",
    "one_line",
]


class TerraFMError(Exception):
    """A failure a user can cause; its message names the file (or option) and what is wrong."""

    exit_code = 1


class DataError(TerraFMError):
    """An input file or sample that cannot be used."""


class ConfigError(TerraFMError, ValueError):
    """A configuration, option or command line that cannot work (exit code 2, like argparse)."""

    exit_code = 2


class WeightsError(TerraFMError):
    """Weights that cannot be loaded, fetched or verified."""


class OutputError(TerraFMError):
    """An output that cannot be written, or that exists and is not ours to replace."""


class WriteError(OutputError, OSError):
    """A write that failed (full disk, read-only, permission); still an ``OSError``, so code that
    caught the original error keeps catching it. ``errno`` is the original's (None for a writer's
    errno-less failure)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


# errno -> the cause in words (what a user can act on).
_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a path component is not a folder",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "already exists",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(e: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """``PATH: cause in words`` for an :class:`OSError` (the path from ``e`` when not given)."""
    where = path if path is not None else e.filename
    cause = _CAUSES.get(e.errno) if e.errno is not None else None
    if cause is None:
        cause = e.strerror or str(e) or type(e).__name__
    if where is None:
        return cause
    where = os.fspath(where)
    return cause if where in cause else f"{where}: {cause}"


def one_line(e: BaseException) -> str:
    """The exception's message folded onto one line (what the CLI prints)."""
    if isinstance(e, OSError) and not isinstance(e, TerraFMError):
        text = describe_os_error(e)
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())
