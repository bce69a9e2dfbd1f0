"""Resumable runs: the progress sidecar beside the embedding GeoTIFF (docs/design.md, "What users need").

``OUT.tif.progress.json`` records the run's fingerprint (inputs, model, options), the windows whose
blocks are durably in ``OUT.tif`` with a checksum of each block, and the table parts already
written. It is replaced atomically after the GeoTIFF was flushed, so it never claims more than the
file holds. On resume the fingerprint must match (else the user is told what changed), and every
recorded block is read back and checked; a block that does not match is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from terrafm.errors import OutputError
from terrafm.outputs import atomic_write

__all__ = [
    "FORMAT",
    "Progress",
    "ProgressError",
    "file_identity",
    "fingerprint_digest",
    "progress_path",
]

FORMAT = "terrafm-embed-progress/1"


class ProgressError(OutputError, ValueError):
    """A progress file that does not belong to this run or cannot be read."""


def progress_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".progress.json")


def file_identity(path: str | Path) -> dict[str, object]:
    """Name, size and modification time of a file: enough to notice it was replaced."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint_digest(fp: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Progress:
    """State of one scene's run.

    Attributes:
        path: the sidecar file.
        fingerprint: what the run computes (JSON-able).
        done: window index -> checksum of its block in the GeoTIFF.
        parts: table part files written so far (names relative to the parts folder).
        skipped: windows without valid data (written as nodata, no table row).
        finished: final outputs this run has already written (table, preview) while finishing,
            so a rerun after a crash there does not take them for another run's files.
    """

    path: Path
    fingerprint: dict[str, object]
    done: dict[int, int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    skipped: set[int] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)

    def save(self) -> None:
        doc = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "done": {str(k): v for k, v in sorted(self.done.items())},
            "skipped": sorted(self.skipped),
            "parts": self.parts,
            "finished": self.finished,
        }
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: str | Path, fingerprint: Mapping[str, object]) -> Progress:
        """Read a sidecar and check it belongs to a run with this fingerprint."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
            done = {int(k): int(v) for k, v in doc["done"].items()}
            skipped = {int(i) for i in doc.get("skipped", [])}
            parts = [str(p) for p in doc.get("parts", [])]
            finished = [str(p) for p in doc.get("finished", [])]
            old = doc["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ProgressError(
                f"{path}: unreadable progress file ({e}); delete it or pass --overwrite"
            ) from e
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if changed:
            raise ProgressError(
                f"{path}: the interrupted run used different {', '.join(changed)}; rerun it with the "
                "same inputs, model and options to resume, or pass --overwrite to start again"
            )
        return cls(path, dict(fingerprint), done, parts, skipped, finished)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
