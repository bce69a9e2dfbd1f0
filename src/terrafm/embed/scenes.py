"""Many scenes: a CSV scene list, sharded across ``torchrun`` ranks (docs/design.md, "What users need").

The list has a header row with ``out`` (the embedding GeoTIFF), optional ``table`` and ``preview``,
and one column per sensor key (``s1``, ``s2_l1c``, ``s2_l2a``) holding that scene's raster or band
folder (empty when the scene lacks the sensor). Relative paths are relative to the list's folder.
Rank ``r`` of ``W`` takes scenes ``r, r + W, r + 2W ...``; each scene is resumable on its own, so
rerunning the same command after a crash finishes the missing ones. A scene that fails is logged,
counted and skipped (``fail_fast`` stops instead); the others go on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from terrafm.embed.pipeline import EmbedOptions, EmbedReport, embed_scene
from terrafm.errors import DataError, TerraFMError
from terrafm.io.scene import SourceSpec
from terrafm.models import TerraFM
from terrafm.sensors import SENSOR_KEYS

__all__ = ["SceneJob", "SceneListError", "ScenesReport", "embed_scenes", "read_scene_list", "shard"]

log = logging.getLogger(__name__)


class SceneListError(DataError, ValueError):
    """A malformed scene list; the message names the file and line."""


@dataclass(frozen=True)
class SceneJob:
    """One scene to embed."""

    inputs: tuple[SourceSpec, ...]
    out: Path
    table: Path | None = None
    preview: Path | None = None


@dataclass
class ScenesReport:
    """Outcome of a sharded multi-scene run on one rank."""

    rank: int
    world_size: int
    reports: list[EmbedReport] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def read_scene_list(
    path: str | Path, template: Callable[[str, str], SourceSpec] | None = None
) -> list[SceneJob]:
    """Parse a scene-list CSV.

    Args:
        path: the CSV file.
        template: builds the :class:`SourceSpec` of ``(sensor, path)`` (to apply shared options
            such as ``--bands`` or ``--nodata``); default: plain specs.
    """
    path = Path(path)
    make = template or (lambda s, p: SourceSpec(s, p))
    base = path.parent

    def resolve(p: str) -> Path:
        q = Path(p.strip())
        return q if q.is_absolute() else base / q

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise SceneListError(f"{path}: cannot read the scene list ({e})") from e
    if not rows:
        raise SceneListError(f"{path}: no scenes (expected a header with 'out' and sensor columns)")
    cols = set(rows[0])
    unknown = sorted(cols - {"out", "table", "preview", *SENSOR_KEYS})
    if "out" not in cols or unknown:
        raise SceneListError(
            f"{path}: columns must be 'out', optional 'table'/'preview' and sensor keys "
            f"{list(SENSOR_KEYS)}; got {sorted(cols)}"
        )
    jobs = []
    for line, row in enumerate(rows, start=2):
        specs = tuple(
            make(s, str(resolve(row[s]))) for s in SENSOR_KEYS if (row.get(s) or "").strip()
        )
        if not (row.get("out") or "").strip() or not specs:
            raise SceneListError(
                f"{path}, line {line}: a scene needs 'out' and at least one sensor"
            )
        opt = {
            k: resolve(row[k]) if (row.get(k) or "").strip() else None for k in ("table", "preview")
        }
        jobs.append(SceneJob(specs, resolve(row["out"]), opt["table"], opt["preview"]))
    outs = [j.out.resolve() for j in jobs]
    dupes = sorted({str(o) for o in outs if outs.count(o) > 1})
    if dupes:
        raise SceneListError(f"{path}: several scenes write the same output {dupes}")
    return jobs


def shard(jobs: Sequence[SceneJob], rank: int, world_size: int) -> list[SceneJob]:
    """The scenes of ``rank``: every ``world_size``-th, starting at ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return list(jobs[rank::world_size])


def embed_scenes(
    model: TerraFM,
    jobs: Sequence[SceneJob],
    options: EmbedOptions,
    *,
    rank: int = 0,
    world_size: int = 1,
    model_name: str = "terrafm",
    checkpoint: str | None = None,
    fail_fast: bool = False,
) -> ScenesReport:
    """Embed this rank's share of ``jobs``, skipping (and reporting) scenes that fail."""
    mine = shard(jobs, rank, world_size)
    result = ScenesReport(rank, world_size)
    log.info("rank %d/%d: %d of %d scenes", rank, world_size, len(mine), len(jobs))
    for i, job in enumerate(mine):
        opts = replace(options)
        try:
            rep = embed_scene(
                model,
                job.inputs,
                job.out,
                table=job.table,
                preview=job.preview,
                options=opts,
                model_name=model_name,
                checkpoint=checkpoint,
            )
        except (TerraFMError, OSError) as e:  # bad inputs, unwritable or existing outputs
            if fail_fast:
                raise
            log.error("scene %d/%d %s failed and is skipped: %s", i + 1, len(mine), job.out, e)
            result.failed.append((job.out, str(e)))
            continue
        log.info(
            "scene %d/%d %s: %s (%d windows)", i + 1, len(mine), job.out, rep.status, rep.windows
        )
        result.reports.append(rep)
    return result
