"""Registry of TerraFM weights: self-describing entries in the style of torchgeo's weights enums.

Every entry (:class:`Weights`) says where its file comes from (a local path, or a URL with a pinned
revision and sha256), which model it fits, the sensors and bands it reads, the normalisation
statistics and units it expects (the published files ship none, so the entry carries the reference
statistics: docs/design.md, "Sensors and units"), its patch size and its licence.

Built in: the published TerraFM-B / TerraFM-L files of the Hugging Face repo ``MBZUAI/TerraFM``
(docs/design.md, "Weights"). Their sha256 and repository revision are not recorded here (they were
not available when this table was written; no hash is ever guessed), so loading them refuses unless
the caller passes the expected ``sha256`` or ``allow_unverified=True``. terrafm's own
``.safetensors`` checkpoints join the registry with :func:`register_checkpoint`, taking their
description from the file's metadata.

Usage::

    from terrafm.weights import TerraFMWeights, fetch_weights, get_weights
    w = get_weights("terrafm_base.published")           # or TerraFMWeights.TERRAFM_B.value
    path = fetch_weights(w, sha256="<hex>")               # verified file in the local cache
    model = terrafm.create_model("terrafm_base", pretrained=path)
    x = w.normalize(raw_dn, "s2_l2a", bands=band_names)   # the statistics travel with the weights
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from terrafm.sensors import SENSOR_KEYS, Stats, get_sensor, normalize
from terrafm.variants import list_models
from terrafm.weights.checkpoint import CheckpointError, read_metadata
from terrafm.weights.fetch import (
    Fetcher,
    HashMismatchError,
    UnverifiedWeightsError,
    check_sha256,
    default_cache_dir,
    fetch_file,
    verify_file,
)

__all__ = [
    "PUBLISHED_REPO",
    "HashMismatchError",
    "RegistryError",
    "TerraFMWeights",
    "UnverifiedWeightsError",
    "Weights",
    "default_weights",
    "fetch_weights",
    "get_weights",
    "list_weights",
    "lookup",
    "register_checkpoint",
    "register_weights",
    "unregister_weights",
]

log = logging.getLogger(__name__)

PUBLISHED_REPO = "MBZUAI/TerraFM"
# {revision} is filled from the entry (or the caller); an unpinned entry resolves "main".
_HF_URL = "https://huggingface.co/" + PUBLISHED_REPO + "/resolve/{revision}/{filename}"
_PAPER = "https://arxiv.org/abs/2506.06281"
_CODE = "https://github.com/mbzuai-oryx/TerraFM"
_UNSTATED_LICENCE = (
    "not stated in the TerraFM release; see https://huggingface.co/MBZUAI/TerraFM before use"
)


class RegistryError(CheckpointError):
    """An unknown weights name, or an entry that does not fit the request."""


def _stats_for(sensors: Sequence[str]) -> dict[str, Stats]:
    return {s: get_sensor(s).stats for s in sensors}


@dataclass(frozen=True)
class Weights:
    """One set of encoder weights and everything needed to use it.

    Attributes:
        name: registry key (``terrafm_base.published``).
        model: the :func:`terrafm.create_model` variant the file fits.
        filename: the file's name (in the cache, or at the end of ``url``).
        url: where to download it; may hold ``{revision}`` and ``{filename}``.
        path: a local file instead of a URL.
        revision: pinned revision for ``url`` (a commit hash); ``None`` = not pinned.
        sha256: expected hex digest; ``None`` = unknown (URL loads then need an explicit choice).
        sensors: sensor keys the weights read.
        bands: per sensor, the band names in stem order.
        units: per sensor, the unit of the model input before z-scoring (``DN``, ``dB``).
        stats: per sensor, the z-score statistics the weights expect.
        patch_size: ViT patch size in pixels.
        img_size: the input size the weights were trained at (position grid = img_size / patch).
        licence: the licence of the weights file.
        description: one line for listings.
        publication: paper URL.
        repo: code repository URL.
    """

    name: str
    model: str
    filename: str
    url: str | None = None
    path: str | None = None
    revision: str | None = None
    sha256: str | None = None
    sensors: tuple[str, ...] = SENSOR_KEYS
    bands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    stats: Mapping[str, Stats] = field(default_factory=dict)
    patch_size: int = 16
    img_size: int = 224
    licence: str = "unknown"
    description: str = ""
    publication: str | None = None
    repo: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.path is None):
            raise RegistryError(f"weights {self.name!r}: give exactly one of url= and path=")
        for s in self.sensors:
            get_sensor(s)
        fill = object.__setattr__  # frozen: complete the derived fields once
        fill(self, "sensors", tuple(self.sensors))
        fill(self, "bands", dict(self.bands) or {s: get_sensor(s).band_names for s in self.sensors})
        fill(self, "units", dict(self.units) or {s: get_sensor(s).unit for s in self.sensors})
        fill(self, "stats", dict(self.stats) or _stats_for(self.sensors))
        if self.sha256 is not None:
            fill(self, "sha256", check_sha256(self.sha256, f"weights {self.name!r}"))
        for s in self.sensors:
            n = len(self.bands[s])
            st = self.stats.get(s)
            if st is None or len(st.mean) != n or len(st.std) != n:
                raise RegistryError(
                    f"weights {self.name!r}: sensor {s!r} needs statistics for its {n} bands"
                )

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def format(self) -> str:
        """``safetensors`` (terrafm checkpoint with metadata) or ``pth`` (published layout)."""
        return "safetensors" if self.filename.endswith(".safetensors") else "pth"

    def resolved_url(self, revision: str | None = None) -> str:
        """The download URL with the revision filled in (``main`` when nothing is pinned)."""
        if self.url is None:
            raise RegistryError(f"weights {self.name!r} are a local file ({self.path}), not a URL")
        return self.url.format(revision=revision or self.revision or "main", filename=self.filename)

    def pinned(self, *, sha256: str | None = None, revision: str | None = None) -> Weights:
        """A copy with the hash and/or revision filled in (e.g. from the hub's file page)."""
        changes: dict[str, Any] = {}
        if sha256 is not None:
            changes["sha256"] = sha256
        if revision is not None:
            changes["revision"] = revision
        return dataclasses.replace(self, **changes)

    def normalize(
        self, x: Any, sensor: str, bands: Sequence[str] | None = None, **kw: Any
    ) -> torch.Tensor:
        """Raw values to model input with these weights' statistics (see :func:`terrafm.normalize`)."""
        if sensor not in self.stats:
            raise RegistryError(
                f"weights {self.name!r} have no statistics for sensor {sensor!r}; "
                f"they read {list(self.sensors)}"
            )
        return normalize(x, sensor, bands, stats=self.stats[sensor], **kw)

    @property
    def meta(self) -> dict[str, Any]:
        """torchgeo-style metadata (``model``, ``bands``, ``in_chans`` ...)."""
        return {
            "model": self.model,
            "sensors": list(self.sensors),
            "bands": {s: list(b) for s, b in self.bands.items()},
            "in_chans": {s: len(b) for s, b in self.bands.items()},
            "units": dict(self.units),
            "patch_size": self.patch_size,
            "img_size": self.img_size,
            "licence": self.licence,
            "publication": self.publication,
            "repo": self.repo,
            "ssl_method": "dino + dual centering",
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything the entry records, JSON-ready."""
        return {
            "name": self.name,
            "source": {
                "url": self.url,
                "path": self.path,
                "revision": self.revision,
                "sha256": self.sha256,
                "filename": self.filename,
            },
            "normalization": {s: st.to_dict() for s, st in self.stats.items()},
            "description": self.description,
            **self.meta,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None, **fields: Any) -> Weights:
        """An entry for a terrafm ``.safetensors`` checkpoint, described by its metadata.

        Args:
            path: the checkpoint.
            name: registry key; default ``<model_name>.<file stem>``.
            fields: overrides (``licence``, ``description``, ``url`` instead of ``path`` ...).
        """
        path = Path(path)
        meta: dict[str, Any] = read_metadata(path)
        model = str(meta.get("model_name"))
        norm: dict[str, Any] = meta.get("normalization") or {}
        sensors: tuple[str, ...] = tuple(meta.get("sensors") or SENSOR_KEYS)
        stats = {s: Stats.from_dict(norm[s]) for s in sensors if s in norm}
        bands = {s: tuple(norm[s].get("bands") or get_sensor(s).band_names) for s in stats}
        units = {s: str(norm[s].get("unit") or get_sensor(s).unit) for s in stats}
        cfg: dict[str, Any] = meta.get("config") or {}
        base: dict[str, Any] = {
            "name": name or f"{model}.{path.stem}",
            "model": model,
            "filename": path.name,
            "sensors": tuple(stats) or sensors,
            "bands": bands,
            "units": units,
            "stats": stats,
            "patch_size": int(meta.get("patch_size") or cfg.get("patch_size") or 16),
            "img_size": int(cfg.get("img_size") or 224),
            "licence": str(meta.get("licence") or meta.get("license") or "unknown"),
            "description": str(meta.get("description") or f"terrafm checkpoint {path.name}"),
        }
        base.update(fields)
        if "url" not in fields:
            base["path"] = str(path.resolve())
        return cls(**base)


def _published(model: str, letter: str, d: int) -> Weights:
    return Weights(
        name=f"{model}.published",
        model=model,
        filename=f"TerraFM-{letter}.pth",
        url=_HF_URL,
        revision=None,  # not pinned here: fill in the hub commit once checked (see docs/ecosystem.md)
        sha256=None,  # unknown here: never guessed; pass it to verify
        licence=_UNSTATED_LICENCE,
        description=(
            f"TerraFM-{letter} (ViT, D={d}) pretrained on Major-TOM S1 RTC + S2 L1C + S2 L2A by "
            "the authors; statistics: the TerraMesh reference (the file ships none)"
        ),
        publication=_PAPER,
        repo=_CODE,
    )


class TerraFMWeights(Enum):
    """The built-in weights, torchgeo style: ``TerraFMWeights.TERRAFM_B.value`` is a :class:`Weights`."""

    TERRAFM_B = _published("terrafm_base", "B", 768)
    TERRAFM_L = _published("terrafm_large", "L", 1024)


_REGISTRY: dict[str, Weights] = {m.value.name: m.value for m in TerraFMWeights}
_ALIASES = {"TerraFM-B": "terrafm_base.published", "TerraFM-L": "terrafm_large.published"}
_DEFAULTS = {"terrafm_base": "terrafm_base.published", "terrafm_large": "terrafm_large.published"}


def list_weights(model: str | None = None) -> list[str]:
    """Registered weights names, optionally only those for one model variant."""
    return sorted(k for k, w in _REGISTRY.items() if model is None or w.model == model)


def get_weights(name: str | Weights | TerraFMWeights) -> Weights:
    """The entry for a name (``terrafm_base.published``, alias ``TerraFM-B``), enum member or entry."""
    if isinstance(name, Weights):
        return name
    if isinstance(name, TerraFMWeights):
        return name.value
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise RegistryError(f"unknown weights {name!r}; registered: {list_weights()}")
    return _REGISTRY[key]


def register_weights(
    weights: Weights, *, overwrite: bool = False, default: bool = False
) -> Weights:
    """Add an entry (``default=True`` also makes it what ``pretrained=True`` loads for its model)."""
    if weights.model not in list_models():
        raise RegistryError(
            f"weights {weights.name!r}: unknown model {weights.model!r}; models: {list_models()}"
        )
    if weights.name in _REGISTRY and not overwrite and _REGISTRY[weights.name] != weights:
        raise RegistryError(f"weights {weights.name!r} already registered (pass overwrite=True)")
    _REGISTRY[weights.name] = weights
    if default:
        _DEFAULTS[weights.model] = weights.name
    return weights


def unregister_weights(name: str) -> None:
    """Remove an entry (and its default role)."""
    _REGISTRY.pop(name, None)
    for model, default in list(_DEFAULTS.items()):
        if default == name:
            del _DEFAULTS[model]


def register_checkpoint(path: str | Path, name: str | None = None, **fields: Any) -> Weights:
    """Register a terrafm ``.safetensors`` checkpoint by path (see :meth:`Weights.from_checkpoint`)."""
    overwrite = bool(fields.pop("overwrite", False))
    default = bool(fields.pop("default", False))
    return register_weights(
        Weights.from_checkpoint(path, name, **fields), overwrite=overwrite, default=default
    )


def default_weights(model: str) -> Weights:
    """What ``pretrained=True`` loads for ``model``."""
    if model not in _DEFAULTS:
        raise RegistryError(
            f"no default weights for {model!r}; pass a file or a name from {list_weights()}"
        )
    return _REGISTRY[_DEFAULTS[model]]


def fetch_weights(
    weights: str | Weights | TerraFMWeights,
    *,
    sha256: str | None = None,
    revision: str | None = None,
    allow_unverified: bool = False,
    cache_dir: str | Path | None = None,
    fetcher: Fetcher | None = None,
) -> Path:
    """The verified local file of an entry, downloading it into the cache if needed.

    Args:
        weights: a registered name, an entry or an enum member.
        sha256: the expected digest, when the entry has none (or to double-check it).
        revision: the revision to download, when the entry pins none.
        allow_unverified: accept a URL file whose hash is unknown.
        cache_dir: where downloads go; default :func:`terrafm.weights.fetch.default_cache_dir`.
        fetcher: replaces the HTTP download (``fetcher(url, dest)``), e.g. for mirrors or tests.

    Raises:
        RegistryError: unknown name, conflicting hashes, missing local file.
        UnverifiedWeightsError: URL entry, no hash known, ``allow_unverified`` not set.
        HashMismatchError: the file is not the expected one (names the file and both hashes).
    """
    w = get_weights(weights)
    expected = check_sha256(sha256, f"weights {w.name!r}") if sha256 else w.sha256
    if sha256 and w.sha256 and expected != w.sha256:
        raise RegistryError(
            f"weights {w.name!r}: the sha256 passed ({expected}) differs from the registered "
            f"one ({w.sha256})"
        )
    if w.path is not None:
        path = Path(w.path).expanduser()
        if not path.is_file():
            raise RegistryError(f"weights {w.name!r}: file not found: {path}")
        if expected is not None:
            verify_file(path, expected, what=w.name)
        return path
    rev = revision or w.revision
    if rev is None and (expected is not None or allow_unverified):
        log.warning("weights %r: no revision pinned, resolving 'main'", w.name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / w.name / (rev or "unpinned") / w.filename
    return fetch_file(
        w.resolved_url(rev),
        target,
        sha256=expected,
        allow_unverified=allow_unverified,
        fetcher=fetcher,
        what=w.name,
    )


def lookup(name: str) -> Weights | None:
    """The entry registered under ``name`` or its alias (``TerraFM-B``), else ``None``."""
    return _REGISTRY.get(_ALIASES.get(name, name))
