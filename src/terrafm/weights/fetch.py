"""Weight files on disk and on the network: a local cache, sha256 verification, atomic downloads.

Nothing here knows about models. :func:`fetch_file` turns a URL (``https://``, ``http://`` or
``file://``) into a verified file in the cache; :func:`verify_file` checks a file against an expected
sha256. A download goes to a temporary file beside its final name and is renamed into place only once
its hash matches, so the cache never holds a truncated or unverified file under a final name.

Verifying a multi-GB file costs seconds, so after a successful check a small sidecar
(``<file>.sha256``: hash, size, mtime) is written and trusted while the file's size and mtime are
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from terrafm.outputs import atomic_write
from terrafm.weights.checkpoint import CheckpointError

__all__ = [
    "Fetcher",
    "HashMismatchError",
    "UnverifiedWeightsError",
    "check_sha256",
    "default_cache_dir",
    "fetch_file",
    "sha256_file",
    "urllib_fetcher",
    "verify_file",
]

log = logging.getLogger(__name__)

# fetcher(url, destination): write the bytes at url to destination (a path that does not exist yet).
Fetcher = Callable[[str, Path], None]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class HashMismatchError(CheckpointError):
    """A weight file whose sha256 is not the expected one."""


class UnverifiedWeightsError(CheckpointError):
    """Refusal to load weights from a URL with no known sha256 (unless explicitly allowed)."""


def default_cache_dir() -> Path:
    """``$TERRAFM_CACHE`` if set, else ``$XDG_CACHE_HOME/terrafm``, else ``~/.cache/terrafm``."""
    if os.environ.get("TERRAFM_CACHE"):
        return Path(os.environ["TERRAFM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "terrafm"


def check_sha256(value: str, what: str) -> str:
    """``value`` lower-cased, or a clear error if it is not 64 hex digits."""
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise ValueError(f"{what}: sha256 must be 64 hexadecimal digits, got {value!r}")
    return v


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_hash(path: Path) -> str | None:
    """The hash recorded beside ``path`` if the file is unchanged since it was recorded."""
    side = _sidecar(path)
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or {k: rec.get(k) for k in ("size", "mtime_ns")} != _stamp(path):
        return None
    value = rec.get("sha256")
    return value if isinstance(value, str) else None


def _write_sidecar(path: Path, digest: str) -> None:
    with atomic_write(_sidecar(path)) as tmp:
        tmp.write_text(json.dumps({"sha256": digest, **_stamp(path)}))


def verify_file(
    path: str | Path, expected: str, *, what: str = "", use_sidecar: bool = False
) -> str:
    """Check ``path`` against ``expected`` (hex sha256); return the digest.

    Args:
        path: the file.
        expected: the hex sha256 it must have.
        what: a name for the error message (the weights entry).
        use_sidecar: trust (and write) a ``<file>.sha256`` record while size and mtime match;
            only for files the cache owns.

    Raises:
        HashMismatchError: naming the file and both hashes.
    """
    path = Path(path)
    expected = check_sha256(expected, str(path))
    digest = _sidecar_hash(path) if use_sidecar else None
    if digest is None:
        digest = sha256_file(path)
        if use_sidecar and digest == expected:
            _write_sidecar(path, digest)
    if digest != expected:
        label = f" (weights {what!r})" if what else ""
        raise HashMismatchError(
            f"{path}{label}: sha256 mismatch: expected {expected}, got {digest}. "
            "The file is corrupt, truncated or not the one the hash was recorded for"
            + ("; delete it to download it again" if use_sidecar else "")
        )
    return digest


def urllib_fetcher(url: str, dest: Path) -> None:
    """Stream ``url`` (http, https or file) to ``dest`` with the standard library."""
    req = urllib.request.Request(url, headers={"User-Agent": "terrafm"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, _CHUNK)
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise CheckpointError(f"cannot download {url}: {e}") from e


def fetch_file(
    url: str,
    target: str | Path,
    *,
    sha256: str | None,
    allow_unverified: bool = False,
    fetcher: Fetcher | None = None,
    what: str = "",
) -> Path:
    """Make ``target`` a verified copy of ``url``, downloading only if it is not there yet.

    Args:
        url: where the file comes from.
        target: its path in the cache.
        sha256: the expected hex digest; ``None`` refuses unless ``allow_unverified``.
        allow_unverified: accept a file whose hash is unknown (its digest is logged so it can be
            pinned).
        fetcher: ``fetcher(url, dest)`` writes the file; default :func:`urllib_fetcher`.
        what: a name for messages (the weights entry).

    Raises:
        UnverifiedWeightsError: no ``sha256`` and not ``allow_unverified`` (before any download).
        HashMismatchError: the cached or downloaded file has another hash (a bad download is
            deleted, never left under ``target``).
    """
    target = Path(target)
    label = f"weights {what!r} ({url})" if what else url
    if sha256 is None and not allow_unverified:
        raise UnverifiedWeightsError(
            f"{label}: no sha256 is recorded for this file, so it cannot be verified; refusing to "
            "load it. Pass sha256='<64 hex digits>' (from `terrafm weights hash FILE` on a trusted "
            "copy, or the file page of the hub) or allow_unverified=True to accept it unverified (command line: --sha256 / --allow-unverified)"
        )
    if sha256 is not None:
        sha256 = check_sha256(sha256, label)
    if target.is_file():
        if sha256 is not None:
            verify_file(target, sha256, what=what, use_sidecar=True)
        else:
            log.warning("%s: using unverified cached file %s", label, target)
        return target
    log.info("downloading %s to %s", label, target)
    with atomic_write(target) as tmp:
        tmp.unlink()  # fetchers write a fresh file
        (fetcher or urllib_fetcher)(url, tmp)
        if not tmp.is_file():
            raise CheckpointError(f"{label}: the download wrote no file")
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256:
            raise HashMismatchError(
                f"{target.name} downloaded from {url}: sha256 mismatch: expected {sha256}, got "
                f"{digest}; the download was discarded (nothing written to {target.parent})"
            )
    _write_sidecar(target, digest)
    if sha256 is None:
        log.warning(
            "%s: accepted UNVERIFIED file %s with sha256 %s; pin it with sha256=%r",
            label,
            target,
            digest,
            digest,
        )
    return target
