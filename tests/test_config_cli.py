"""The one command-line mapping: argparse flags, ``--config`` and ``--set`` onto typed settings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from terrafm.cli import build_parser
from terrafm.config import ConfigError, Flag, add_settings_arguments, settings_from_args
from terrafm.data.loader import CurationConfig, QualityConfig
from terrafm.embed.pipeline import EmbedOptions
from terrafm.eval.runner import EvalSettings

EVAL = ["eval", "--benchmark", "folder", "--task", "t", "--data-root", "d", "--protocol", "knn"]
EMBED = ["embed", "--input", "s2_l2a=x.tif", "--out", "o.tif"]


def _eval(tmp_path: Path, *extra: str) -> EvalSettings:
    from terrafm.commands.eval import _settings

    args = build_parser().parse_args([*EVAL, "--out", str(tmp_path / "o"), *extra])
    return _settings(args)


def _embed(*extra: str) -> EmbedOptions:
    from terrafm.commands.embed import _options

    return _options(build_parser().parse_args([*EMBED, *extra]))


def test_eval_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    s = _eval(tmp_path)
    d = EvalSettings()
    assert s.device in ("cpu", "cuda") and s.cache_dir == str(tmp_path / "o" / "features")
    for name in ("pooling", "ks", "flips", "tile", "channels", "seed", "num_workers", "lr", "lrs"):
        assert getattr(s, name) == getattr(d, name), name
    assert s.on_error == "raise" and s.progress is True


def test_eval_flags_map_onto_fields(tmp_path: Path) -> None:
    s = _eval(tmp_path, "--lr", "1e-3", "--k", "10", "--workers", "2", "--no-progress",
              "--skip-bad", "--no-cache", "--flips", "--pooling", "mean", "--seed", "3")  # fmt: skip
    assert s.lr == 1e-3 and s.lrs is None and s.ks == (10,) and s.num_workers == 2
    assert s.progress is False and s.on_error == "skip" and s.cache_dir is None
    assert s.flips is True and s.pooling == "mean" and s.seed == 3
    sweep = _eval(tmp_path, "--lr", "1e-3", "3e-4")
    assert sweep.lr is None and sweep.lrs == (1e-3, 3e-4)


def test_eval_file_then_flags_then_set(tmp_path: Path) -> None:
    f = tmp_path / "eval.yaml"
    f.write_text("pooling: cls+mean\nepochs: 7\nks: [3, 1]\nextra: {note: x}\n")
    s = _eval(tmp_path, "--config", str(f), "--epochs", "9", "--set", "tile=32", "seed=5")
    assert s.pooling == "cls+mean" and s.ks == (3, 1) and s.extra == {"note": "x"}
    assert s.epochs == 9 and s.tile == 32 and s.seed == 5
    s = _eval(tmp_path, "--epochs", "9", "--set", "epochs=4")
    assert s.epochs == 4  # --set comes last


def test_eval_settings_are_strict(tmp_path: Path) -> None:
    f = tmp_path / "eval.yaml"
    f.write_text("poolng: mean\n")
    with pytest.raises(
        ConfigError, match=r"eval.yaml: unknown config key 'poolng' \(did you mean 'pooling'"
    ):
        _eval(tmp_path, "--config", str(f))
    with pytest.raises(ConfigError, match=r"epochs: expected int \| None, got .many."):
        _eval(tmp_path, "--set", "epochs=many")
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        _eval(tmp_path, "--set", "nope=1")


def test_embed_auto_values_and_validation(tmp_path: Path) -> None:
    o = _embed("--device", "cpu", "--no-progress", "--window", "64", "--overlap", "16")
    assert o.device == "cpu" and o.precision == "fp32" and o.readers == 2
    assert o.progress is False and (o.window, o.overlap) == (64, 16)
    assert _embed("--device", "cpu", "--readers", "3", "--precision", "bf16").readers == 3
    f = tmp_path / "embed.yaml"
    f.write_text("window: 128\nmissing_sensor: nodata\n")
    o = _embed("--device", "cpu", "--config", str(f), "--set", "batch_size=2")
    assert (o.window, o.missing_sensor, o.batch_size) == (128, "nodata", 2)
    with pytest.raises(ConfigError, match="EmbedOptions: overlap must be a multiple of 16"):
        _embed("--device", "cpu", "--overlap", "10")


def test_data_command_flags_build_the_library_configs() -> None:
    from terrafm.commands.data import _CURATION, _QUALITY

    args = build_parser().parse_args(["data", "r", "--any-sensor", "--max-invalid", "0.2"])
    cur = settings_from_args(args, CurationConfig, _CURATION)
    assert cur == CurationConfig(require_all=False)
    assert settings_from_args(args, QualityConfig, _QUALITY) == QualityConfig(max_invalid=0.2)


def test_flag_types_come_from_the_annotations() -> None:
    p = argparse.ArgumentParser()
    flags = (Flag("ks"), Flag("flips"), Flag("dtype"), Flag("label_fraction"))
    add_settings_arguments(p, EvalSettings, flags, config_flags=False)
    s = settings_from_args(
        p.parse_args(["--ks", "4", "2", "--no-flips", "--label-fraction", "0.5"]),
        EvalSettings,
        flags,
    )
    assert s.ks == (4, 2) and s.flips is False and s.label_fraction == 0.5 and s.dtype is None
    with pytest.raises(SystemExit):
        p.parse_args(["--ks", "four"])
    with pytest.raises(ConfigError, match="has no field 'nope'"):
        add_settings_arguments(p, EvalSettings, (Flag("nope"),), config_flags=False)
