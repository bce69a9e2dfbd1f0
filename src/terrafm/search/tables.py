"""Reading ``terrafm embed`` outputs for search: window tables and what produced them.

An embed table (see docs/embed.md) is a GeoParquet file with one row per window: ``window_id``,
``row``, ``col``, ``height``, ``width``, ``embedding`` (fixed-size list of D float32), ``sources``,
``geometry`` (WKB in the scene CRS) and a ``terrafm`` metadata key holding the run description
(model name, checkpoint, and the run fingerprint with the weights digest, the inputs per sensor and
the exported layer). Tables are read from local paths or any fsspec URL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from terrafm.errors import DataError

__all__ = [
    "EmbedTable",
    "Identity",
    "IdentityError",
    "TableError",
    "expand",
    "open_table",
    "read_embeddings",
    "table_identity",
]

# Columns search needs from an embed table (see terrafm.embed.table.table_schema).
COLUMNS = ("window_id", "row", "col", "height", "width", "sources", "geometry")


class TableError(DataError, ValueError):
    """A file that is not a readable ``terrafm embed`` table; the message names it."""


class IdentityError(DataError, ValueError):
    """Embeddings of different models, weights, layers or widths were combined."""


@dataclass(frozen=True)
class Identity:
    """What makes two embeddings comparable: the same encoder, weights, layer and width.

    ``sensors`` is recorded but not part of the match: TerraFM's pretraining aligns the sensors in
    one space, so an S1-only embedding may be compared with an S2 or fused one.
    """

    model: str
    weights: str
    layer: int | None
    dim: int
    sensors: tuple[str, ...]

    def key(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "layer": self.layer, "dim": self.dim}

    def mismatch(self, other: Identity) -> str | None:
        """None when comparable, else a description of what differs."""
        a, b = self.key(), other.key()
        diff = [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]
        return ", ".join(diff) or None

    def to_json(self) -> dict[str, Any]:
        return {**self.key(), "sensors": list(self.sensors)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Identity:
        return cls(d["model"], d["weights"], d["layer"], int(d["dim"]), tuple(d["sensors"]))


def expand(urls: Sequence[str | Path]) -> list[str]:
    """Paths or fsspec URLs, with glob patterns (``s3://b/emb/*.parquet``) expanded, in order."""
    out: list[str] = []
    for url in map(str, urls):
        if not any(c in url for c in "*?["):
            out.append(url)
            continue
        fs, _, paths = fsspec.core.get_fs_token_paths(url)
        if not paths:
            raise TableError(f"{url}: no file matches")
        out.extend(fs.unstrip_protocol(p) if "://" in url else p for p in sorted(paths))
    return out


def _open(url: str | Path):
    return fsspec.open(str(url), "rb").open()


def table_identity(meta: dict[str, Any], dim: int, name: str) -> Identity:
    """The identity recorded in an embed table's ``terrafm`` metadata."""
    fp = meta.get("fingerprint")
    if not isinstance(fp, dict) or "weights" not in fp or "inputs" not in fp:
        raise TableError(f"{name}: the 'terrafm' metadata has no run fingerprint (weights, inputs)")
    return Identity(
        str(meta.get("model") or fp.get("model")),
        str(fp["weights"]),
        fp.get("layer"),
        dim,
        tuple(sorted(fp["inputs"])),
    )


@dataclass
class EmbedTable:
    """An embed table's description (the rows are read on demand).

    Attributes:
        url: the path or URL as given.
        rows: number of windows.
        identity: model, weights, layer, width, sensors.
        crs_wkt: the scene CRS (WKT) or None.
        checkpoint: the checkpoint recorded by the run.
    """

    url: str
    rows: int
    identity: Identity
    crs_wkt: str | None
    checkpoint: str | None

    def read(self, columns: tuple[str, ...] = COLUMNS) -> pa.Table:
        with _open(self.url) as f:
            return pq.read_table(f, columns=list(columns))

    def embeddings(self) -> np.ndarray:
        """All window embeddings as (rows, D) float32."""
        return read_embeddings(self.read(("embedding",)), self.identity.dim)


def read_embeddings(table: pa.Table, dim: int) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    return np.asarray(col.values.to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)


def open_table(url: str | Path) -> EmbedTable:
    """Read an embed table's schema and metadata (not its rows); errors name the file."""
    name = str(url)
    try:
        with _open(url) as f:
            pf = pq.ParquetFile(f)
            schema, rows = pf.schema_arrow, pf.metadata.num_rows
    except (OSError, pa.ArrowInvalid) as e:
        raise TableError(f"{name}: cannot read as a Parquet file ({e})") from e
    missing = [c for c in (*COLUMNS, "embedding") if c not in schema.names]
    if missing:
        raise TableError(f"{name}: not a terrafm embed table (missing columns {missing})")
    emb = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(emb):
        raise TableError(f"{name}: column 'embedding' is {emb}, expected a fixed-size list")
    md = schema.metadata or {}
    if b"terrafm" not in md or b"geo" not in md:
        raise TableError(f"{name}: no 'terrafm' / 'geo' metadata: not written by terrafm embed")
    meta = json.loads(md[b"terrafm"])
    geo = json.loads(md[b"geo"])
    crs = geo["columns"]["geometry"].get("crs")
    crs_wkt = None
    if crs is not None:
        from rasterio.crs import CRS

        crs_wkt = CRS.from_user_input(json.dumps(crs)).to_wkt()
    return EmbedTable(
        name,
        int(rows),
        table_identity(meta, emb.list_size, name),
        crs_wkt,
        meta.get("checkpoint"),
    )
