"""Typed run configuration: dataclasses loaded from YAML plus ``key=value`` overrides.

The merge is strict: a key that is not a field of the target dataclass, or a value of the wrong
type, is an error naming the key (and the file it came from), never silently ignored. Only the
top-level builders (``terrafm pretrain``) read these objects; library modules take explicit
arguments.

The same loader builds the evaluation settings (:class:`terrafm.eval.runner.EvalSettings`) and
the embedding options (:class:`terrafm.embed.EmbedOptions`): a command declares which fields it
shows as flags (:class:`Flag`), :func:`add_settings_arguments` adds them (with ``--config FILE``
and ``--set KEY=VALUE``) and :func:`settings_from_args` maps the parsed command line onto the
dataclass, strictly, in one place (docs/design.md, "Configuration").

The pretraining config (:class:`PretrainConfig`) holds the recipe of docs/design.md, "Objective" with its **choice**
defaults; the shipped YAML files in ``terrafm/configs/`` override them per scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from terrafm import errors
from terrafm.data.loader import CurationConfig, QualityConfig
from terrafm.data.multicrop import MultiCropConfig
from terrafm.data.photometric import PhotometricConfig

__all__ = [
    "ABLATIONS",
    "ConfigError",
    "DataConfig",
    "Flag",
    "HeadConfig",
    "LossConfig",
    "MaskedPatchConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrainConfig",
    "ablation_overrides",
    "add_settings_arguments",
    "apply_overrides",
    "config_diff",
    "from_dict",
    "load_config",
    "parse_variant",
    "save_config",
    "settings_from_args",
    "settings_input",
    "shipped_config",
    "to_dict",
    "upgrade_moved",
]

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(errors.ConfigError):
    """A config file or override that does not fit the typed schema."""


# --------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    """The encoder being pretrained."""

    name: str = "terrafm_base"
    drop_path_rate: float = 0.1  # docs/design.md, "Objective" (stated)
    pretrained: str | None = None  # optional weights to start from (continual pretraining)


@dataclass
class HeadConfig:
    """DINO projection head (docs/design.md, "Objective", DINO defaults)."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    norm_last_layer: bool = True


@dataclass
class MaskedPatchConfig:
    """Masked patch-token self-distillation (iBOT-style), beyond the paper; off by default.

    The student sees masked global views (a learned mask token replaces the masked patch
    embeddings), the teacher the unmasked ones; the loss is the cross-entropy between the
    teacher's dual-centred patch distributions and the student's at the masked positions
    (docs/pretraining.md, "Masked patch distillation and KoLeo").
    """

    enabled: bool = False
    weight: float = 1.0  # factor of the patch loss added to the CLS loss
    mask_mode: Literal["block", "random"] = "block"
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # share of a view's patches masked, drawn per view
    mask_prob: float = 0.5  # share of global views that are masked at all
    shared_head: bool = False  # patch logits from the CLS head instead of a head of their own
    out_dim: int | None = None  # prototypes of the patch head; None: head.out_dim
    center_momentum: float = 0.9  # EMA momentum of the two patch centres


@dataclass
class LossConfig:
    """DINO cross-entropy with dual centering (docs/design.md, "Objective"), and the opt-in extras."""

    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.06
    warmup_teacher_temp_epochs: float = 30.0
    dual_centering: bool = True  # False: plain DINO centre (ablation)
    alpha: float = 0.8
    center_momentum: float = 0.9
    # Land-cover codes of the high-frequency set H; None: computed from the training set.
    high_freq_classes: list[int] | None = None
    # Beyond the paper, off by default: masked patch distillation and the KoLeo regulariser on
    # the student's L2-normalised backbone CLS (weight 0: off).
    ibot: MaskedPatchConfig = field(default_factory=MaskedPatchConfig)
    koleo_weight: float = 0.0
    # Also pair teacher global view i with student global view i (the same crop, each with its
    # own sensor draw). Off: DINO's rule, every pair of different crops (docs/pretraining.md).
    same_crop_pairs: bool = False


@dataclass
class OptimConfig:
    """AdamW and the lr / wd / teacher-momentum schedules (docs/design.md, "Objective", DINO v1 defaults)."""

    epochs: int = 100
    lr: float = 5e-4  # at a global batch of 256 when scale_lr_with_batch
    scale_lr_with_batch: bool = True
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    clip_grad: float = 3.0  # 0 disables clipping (the norm is still computed and logged)
    freeze_last_layer_epochs: float = 1.0


@dataclass
class DataConfig:
    """Pretraining data: Major-TOM roots, sampling, sensor draw, and the data library's own
    configs of the views, the curation and the pixel quality (docs/design.md, "Objective",
    "Pretraining data"; docs/pretraining.md, "Config").

    The component switches: ``modality_aug`` (sensors as augmentation) and ``fusion`` (several
    sensors fused in one view). Both on: each view draws its sensors by
    ``multicrop.sensor_draw`` (``independent`` or ``all_or_one``, keeping each with
    ``multicrop.keep_p``). Fusion off: each view uses one sensor at random. Modality augmentation
    off: every view uses all sensors (fusion on) or only ``single_sensor`` (fusion off, the
    paper's "DINO on S2-L2A").
    """

    # Keys of the flat layout before the nested sections, and where each now lives.
    MOVED: ClassVar[dict[str, str]] = {
        "global_size": "multicrop.global_size",
        "local_size": "multicrop.local_size",
        "n_local": "multicrop.n_local",
        "global_scale": "multicrop.global_scale",
        "local_scale": "multicrop.local_scale",
        "flip_p": "multicrop.flip_p",
        "modality_mode": "multicrop.sensor_draw",
        "keep_prob": "multicrop.keep_p",
        "ocean_keep": "curation.ocean_keep",
        "max_cloud_cover": "curation.max_cloud_cover",
        "tiles_per_side": "curation.tiles_per_side",
        "max_invalid": "quality.max_invalid",
        "fail_fast": "quality.fail_fast",
    }

    root: str | list[str] | None = None  # Major-TOM root(s) or GeoTIFF folder(s)
    shards: str | None = None  # a `terrafm prepare` store: read instead of data.root
    augment_device: Literal["auto", "cpu", "cuda"] = "auto"  # where shard views are cut
    sensors: list[str] = field(default_factory=lambda: ["s1", "s2_l1c", "s2_l2a"])
    batch_size: int = 64  # per process
    num_workers: int = 8
    samples_per_epoch: int | None = None  # over all ranks; None: the number of curated tiles
    modality_aug: bool = True
    fusion: bool = True
    single_sensor: str = "s2_l2a"
    balance: float = 1.0  # inverse-stratum-frequency exponent (1: balanced strata, 0: uniform)
    replacement: bool = True
    pin_memory: bool = True
    cache_mb: int = 0  # keep decoded tiles in memory up to this budget (small data, many epochs)
    # The views: sizes, scales, flips and the sensor draw when both switches are on.
    multicrop: MultiCropConfig = field(default_factory=MultiCropConfig)
    # Which cells and tiles enter: ocean share, cloud cover, tiling (docs/design.md, "Pretraining data").
    curation: CurationConfig = field(default_factory=CurationConfig)
    # Pixel and sample quality: invalid share per tile, cloud masking, skip or stop on bad samples.
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Per-view photometric jitter, beyond the paper (off: ``prob = 0``; docs/pretraining.md).
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)


@dataclass
class TrainConfig:
    """How the run executes: devices, precision, checkpoints, logging, faults."""

    output_dir: str = "runs/pretrain"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bfloat16 autocast
    strategy: Literal["ddp", "fsdp"] = "ddp"  # "fsdp": FSDP2 sharding (TerraFM-L)
    max_steps: int | None = None  # stop early; schedules still follow optim.epochs
    checkpoint_every: int = 500  # steps; a checkpoint is also written at the end
    log_every: int = 10
    max_nonfinite: int = 10  # consecutive non-finite steps before the run stops
    progress: bool = True
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    # Run each sample only through the stems it uses (see MultiCropModel); null: on for CPU.
    group_by_sensors: bool | None = None
    # RankMe of the teacher's and student's CLS and patch tokens on a fixed probe batch (the
    # run's first batch), logged every this many steps (0: never); no effect on training.
    rankme_every: int = 0


@dataclass
class PretrainConfig:
    """Everything ``terrafm pretrain`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> PretrainConfig:
        """Check value ranges that types cannot express; returns self."""
        from terrafm.models import list_models
        from terrafm.sensors import SENSOR_KEYS

        checks: list[tuple[bool, str]] = [
            (self.model.name in list_models(), f"model.name must be one of {list_models()}"),
            (0.0 <= self.loss.alpha <= 1.0, "loss.alpha must be in [0, 1]"),
            (0.0 <= self.loss.center_momentum < 1.0, "loss.center_momentum must be in [0, 1)"),
            (self.loss.student_temp > 0 and self.loss.teacher_temp > 0, "temperatures must be > 0"),
            (self.loss.warmup_teacher_temp > 0, "loss.warmup_teacher_temp must be > 0"),
            (self.head.out_dim > 0 and self.head.nlayers >= 1, "head.out_dim > 0, nlayers >= 1"),
            (self.optim.epochs > 0, "optim.epochs must be > 0"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (0 <= self.optim.momentum_teacher <= 1, "optim.momentum_teacher must be in [0, 1]"),
            (self.optim.clip_grad >= 0, "optim.clip_grad must be >= 0"),
            (self.data.batch_size > 0, "data.batch_size must be > 0"),
            (
                self.data.multicrop.sensor_draw in ("independent", "all_or_one"),
                "data.multicrop.sensor_draw must be independent or all_or_one (the draws "
                "'one' and 'all' follow from data.fusion and data.modality_aug)",
            ),
            (len(self.data.sensors) > 0, "data.sensors must not be empty"),
            (
                all(s in SENSOR_KEYS for s in self.data.sensors),
                f"data.sensors must be drawn from {list(SENSOR_KEYS)}",
            ),
            (self.data.single_sensor in SENSOR_KEYS, f"data.single_sensor in {list(SENSOR_KEYS)}"),
            (0.0 <= self.data.balance, "data.balance must be >= 0"),
            (self.data.curation.tiles_per_side >= 1, "data.curation.tiles_per_side must be >= 1"),
            (self.train.max_nonfinite >= 1, "train.max_nonfinite must be >= 1"),
            (self.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
            (self.train.log_every >= 1, "train.log_every must be >= 1"),
            (self.train.rankme_every >= 0, "train.rankme_every must be >= 0"),
            (self.loss.koleo_weight >= 0, "loss.koleo_weight must be >= 0"),
            (self.loss.ibot.weight >= 0, "loss.ibot.weight must be >= 0"),
            (
                0.0 <= self.loss.ibot.mask_ratio[0] <= self.loss.ibot.mask_ratio[1] < 1.0,
                "loss.ibot.mask_ratio must be [low, high] with 0 <= low <= high < 1",
            ),
            (0.0 < self.loss.ibot.mask_prob <= 1.0, "loss.ibot.mask_prob must be in (0, 1]"),
            (
                0.0 <= self.loss.ibot.center_momentum < 1.0,
                "loss.ibot.center_momentum must be in [0, 1)",
            ),
            (
                self.loss.ibot.out_dim is None or self.loss.ibot.out_dim > 0,
                "loss.ibot.out_dim must be > 0 (or null)",
            ),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ConfigError("invalid pretraining config: " + "; ".join(bad))
        return self


# Component ablations of docs/design.md, "Objective" (paper Table: + modality aug, + fusion, + dual centering).
ABLATIONS: dict[str, tuple[str, ...]] = {
    "fusion": ("data.fusion=false",),
    "modality_aug": ("data.modality_aug=false",),
    "dual_centering": ("loss.dual_centering=false",),
}


def ablation_overrides(names: Iterable[str]) -> list[str]:
    """The ``key=value`` overrides that switch off the named components."""
    out: list[str] = []
    for name in names:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        out.extend(ABLATIONS[name])
    return out


# --------------------------------------------------------------------------- type checking
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the value in its canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}"
            )
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            _coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()
        }
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))
            )
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin in (tuple, Sequence) else items  # Sequence: immutable
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def _build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    moved: Mapping[str, str] = getattr(cls, "MOVED", {})
    prefix = f"{where}." if where else ""
    for key in data:
        if key in moved:
            raise ConfigError(
                f"config key {prefix + str(key)!r} has moved to {prefix + moved[key]!r} "
                f'(write it as {prefix + moved[key]}; docs/pretraining.md, "Config")'
            )
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}{hint}; valid keys: {sorted(fields)}"
            )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{where or _type_name(cls)}: {e}") from e


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a config dataclass from a nested mapping, strictly."""
    return _build(cls, data)


def upgrade_moved(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a nested config dict with keys of an older layout moved to where they live now
    (each dataclass's ``MOVED`` map), e.g. to compare the config saved in an old checkpoint.
    User files are not upgraded silently: :func:`from_dict` names the new place instead."""
    out = dict(data)
    if not dataclasses.is_dataclass(cls):
        return out
    for old, new in getattr(cls, "MOVED", {}).items():
        if old in out:
            *parents, leaf = new.split(".")
            node = out
            for p in parents:
                node[p] = dict(node.get(p) or {})
                node = node[p]
            node[leaf] = out.pop(old)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(out.get(f.name), Mapping):
            out[f.name] = upgrade_moved(tp, out[f.name])  # type: ignore[arg-type]
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts and lists (YAML/JSON friendly)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    out = plain(cfg)
    assert isinstance(out, dict)
    return out


# --------------------------------------------------------------------------- overrides
def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value ({e})") from e
    return key.split("."), value


def parse_variant(spec: str, named: Mapping[str, Sequence[str]]) -> tuple[str, list[str]]:
    """A named set of overrides: ``name`` (a key of ``named``) or ``name:key=value,key=value``.

    Raises:
        ConfigError: an unknown name.
    """
    if ":" in spec:
        name, rest = spec.split(":", 1)
        return name, [x for x in rest.split(",") if x]
    if spec not in named:
        raise ConfigError(
            f"unknown variant {spec!r}; choose from {sorted(named)} or name:key=value,..."
        )
    return spec, list(named[spec])


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Merge ``a.b.c=value`` strings (values parsed as YAML) into a nested dict, in place."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML file, then the overrides; strictly typed.

    Raises:
        ConfigError: unreadable file, unknown key, or a value of the wrong type.
    """
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(
                f"{path}: a config file must hold a mapping, got {type(loaded).__name__}"
            )
        try:
            _build(cls, loaded)  # strict check of the file alone, so errors name it
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        _merge(data, loaded)
    data = apply_overrides(data, overrides)
    try:
        cfg = _build(cls, data)
    except ConfigError as e:
        raise ConfigError(f"override: {e}") from e
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from terrafm.outputs import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(config_diff(va, vb, key + "."))
        elif va != vb:
            out.append(key)
    return out


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``terrafm/configs`` (``pretrain_tiny_cpu`` or with .yaml)."""
    here = Path(__file__).resolve().parent / "configs"
    fname = name if name.endswith(".yaml") else f"{name}.yaml"
    path = here / fname
    if not path.is_file():
        avail = sorted(p.name for p in here.glob("*.yaml"))
        raise ConfigError(f"no shipped config {name!r}; available: {avail}")
    return path


# --------------------------------------------------------------------------- command lines
@dataclass(frozen=True)
class Flag:
    """How a settings field (or a derived choice) appears on a command line.

    Attributes:
        field: the settings field the flag sets; its type gives argparse's ``type``, ``nargs``
            (lists), ``choices`` (``Literal``) or a ``--x / --no-x`` pair (booleans).
        flag: the option string; default ``--`` + the field with ``-`` for ``_``.
        help: help text (the field's default is appended unless the text names one).
        to: for a flag that is not one field: maps the parsed value to ``{field: value}``.
        kwargs: argparse arguments that replace the derived ones (``choices``, ``action`` ...).
    """

    field: str | None = None
    flag: str | None = None
    help: str | None = None
    to: Callable[[Any], dict[str, Any]] | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def option(self) -> str:
        assert self.flag or self.field, "a Flag needs a field or a flag"
        return self.flag or "--" + str(self.field).replace("_", "-")

    @property
    def dest(self) -> str:
        return "settings__" + self.option.lstrip("-").replace("-", "_")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _argparse_kwargs(cls: type, flag: Flag) -> dict[str, Any]:
    """argparse arguments of a flag, derived from its field's annotation and default."""
    if flag.field is None:
        return _with_metavar(flag, {"help": flag.help, **flag.kwargs})
    hints = typing.get_type_hints(cls)
    if flag.field not in hints:
        raise ConfigError(f"{flag.option}: {cls.__name__} has no field {flag.field!r}")
    tp = _strip_optional(hints[flag.field])
    f = {x.name: x for x in dataclasses.fields(cls)}[flag.field]  # type: ignore[arg-type]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    out: dict[str, Any] = {}
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        out["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        out["choices"] = targs
    elif origin in (list, tuple, Sequence):
        out["nargs"] = "+"
        if targs and targs[0] in (int, float, str):
            out["type"] = targs[0]
    elif tp in (int, float, str):
        out["type"] = tp
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default))
    shown = "" if default is None or default == "" else f" (default: {default})"
    if flag.help and "default" in flag.help:  # the command states its own default
        shown = ""
    out["help"] = (flag.help or "") + shown if flag.help or shown else None
    return _with_metavar(flag, {**out, **flag.kwargs})


def _with_metavar(flag: Flag, kwargs: dict[str, Any]) -> dict[str, Any]:
    if not ({"action", "choices", "metavar"} & set(kwargs)):
        kwargs["metavar"] = flag.option.lstrip("-").upper().replace("-", "_")
    return kwargs


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    flags: Sequence[Flag],
    *,
    config_flags: bool = True,
) -> None:
    """Add the flags of a settings dataclass ``cls`` to an argparse parser (or group).

    With ``config_flags``, also ``--config FILE`` (a YAML file of ``cls`` fields) and
    ``--set KEY=VALUE ...`` (overrides, values read as YAML). A flag that is not given leaves
    the field to the file, then to the dataclass default: read them with
    :func:`settings_from_args`.
    """
    for flag in flags:
        parser.add_argument(
            flag.option,
            dest=flag.dest,
            default=argparse.SUPPRESS,
            **_argparse_kwargs(cls, flag),
        )
    if config_flags:
        parser.add_argument(
            "--config",
            dest="settings__config",
            metavar="FILE",
            help=f"YAML file of {cls.__name__} fields (strict: an unknown key is an error)",
        )
        parser.add_argument(
            "--set",
            dest="settings__set",
            nargs="+",
            action="extend",
            default=[],
            metavar="KEY=VALUE",
            help=f"{cls.__name__} field overrides, applied after --config and the flags",
        )


def settings_input(args: argparse.Namespace, cls: type, flags: Sequence[Flag]) -> dict[str, Any]:
    """What the command line gave for ``cls``, as a plain dict not yet typed: the ``--config``
    file, then the flags given, then ``--set``. Lets a command fill its own ``auto`` values
    the settings are built (:func:`settings_from_args`).

    Raises:
        ConfigError: unreadable file or a key that is not a field of ``cls`` (naming the file).
    """
    data: dict[str, Any] = {}
    path = getattr(args, "settings__config", None)
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read settings ({e})") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: a settings file must hold a mapping")
        try:
            _build(cls, loaded)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        data.update(loaded)
    for flag in flags:
        if hasattr(args, flag.dest):
            value = getattr(args, flag.dest)
            data.update(flag.to(value) if flag.to is not None else {str(flag.field): value})
    return apply_overrides(data, getattr(args, "settings__set", []) or [])


def settings_from_args(
    args: argparse.Namespace,
    cls: type[T],
    flags: Sequence[Flag],
    resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> T:
    """The settings dataclass ``cls`` of a parsed command line: the dataclass defaults under
    :func:`settings_input`, strictly typed (``validate()`` is called when ``cls`` has one).

    Args:
        resolve: the command's own defaults and ``auto`` values: takes what the command line gave
            (a plain dict) and returns the dict to build from (e.g. ``device: auto`` -> ``cuda``).

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a failed validation.
    """
    data = settings_input(args, cls, flags)
    if resolve is not None:
        data = resolve(data)
    cfg = _build(cls, data)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{cls.__name__}: {e}") from e
    return cfg
