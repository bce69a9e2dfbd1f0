"""Typed configs: strict YAML + key=value merge, shipped configs, ablation switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from terrafm.config import (
    ConfigError,
    PretrainConfig,
    ablation_overrides,
    config_diff,
    from_dict,
    load_config,
    save_config,
    shipped_config,
    to_dict,
    upgrade_moved,
)

SHIPPED = ("pretrain_tiny_cpu", "pretrain_base_majortom", "pretrain_large_majortom")


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_are_the_paper_recipe() -> None:
    cfg = load_config(PretrainConfig)
    assert cfg.loss.alpha == 0.8 and cfg.loss.center_momentum == 0.9
    assert cfg.loss.student_temp == 0.1 and cfg.loss.teacher_temp == 0.06
    assert cfg.head.out_dim == 65536 and cfg.head.bottleneck_dim == 256
    assert cfg.optim.momentum_teacher == 0.996 and cfg.optim.clip_grad == 3.0
    assert cfg.model.drop_path_rate == 0.1 and cfg.data.multicrop.n_local == 8


def test_file_then_overrides(tmp_path: Path) -> None:
    p = _write(
        tmp_path, {"optim": {"lr": 1e-3}, "data": {"multicrop": {"global_scale": [0.3, 1.0]}}}
    )
    cfg = load_config(
        PretrainConfig,
        p,
        ["optim.lr=2e-3", "data.sensors=[s1, s2_l2a]", "loss.high_freq_classes=[10, 30]"],
    )
    assert cfg.optim.lr == 2e-3
    assert cfg.data.multicrop.global_scale == (0.3, 1.0)
    assert cfg.data.sensors == ["s1", "s2_l2a"]
    assert cfg.loss.high_freq_classes == [10, 30]
    assert cfg.optim.epochs == 100  # untouched default
    assert load_config(PretrainConfig, None, ["train.max_steps=null"]).train.max_steps is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optim.lrr=1"], r"unknown config key 'optim.lrr' \(did you mean 'lr'\?\)"),
        (["nosection.x=1"], "unknown config key 'nosection'"),
        (["optim.epochs=1.5"], "optim.epochs: expected an integer"),
        (["data.fusion=1"], "data.fusion: expected true or false"),
        (["optim.lr=fast"], "optim.lr: expected a number"),
        (["train.strategy=zero3"], r"train.strategy: expected one of \['ddp', 'fsdp'\]"),
        (["data.multicrop.global_scale=[0.1]"], "data.multicrop.global_scale: expected 2 values"),
        (["data.sensors=[s1, 3]"], r"data.sensors\[1\]: expected a string"),
        (["optim.lr"], "not of the form key=value"),
        (["loss.alpha=1.5"], r"loss.alpha must be in \[0, 1\]"),
        (["data.sensors=[s3]"], "data.sensors must be drawn from"),
        (["data.multicrop.global_size=100"], "multiple of 16"),
        (["model.name=vit_huge"], "model.name must be one of"),
        (["optim=3"], "optim: expected a mapping"),
        (["data.multicrop.sensor_draw=one"], "sensor_draw must be independent or all_or_one"),
        (["data.multicrop.keep_p=0"], r"data.multicrop: keep_p"),
    ],
)
def test_strict_overrides(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(PretrainConfig, None, overrides)


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, {"loss": {"dual_centring": False}})
    with pytest.raises(ConfigError, match=r"cfg.yaml: unknown config key 'loss.dual_centring'"):
        load_config(PretrainConfig, p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(PretrainConfig, p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")


def test_save_roundtrip_and_diff(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, None, ["optim.lr=3e-4", "data.multicrop.n_local=4"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(PretrainConfig, path)
    assert again == cfg
    other = load_config(PretrainConfig, path, ["optim.lr=1e-4"])
    assert config_diff(to_dict(cfg), to_dict(other)) == ["optim.lr"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(PretrainConfig, shipped_config(name))
    assert cfg.validate() is cfg


def test_shipped_recipes() -> None:
    base = load_config(PretrainConfig, shipped_config("pretrain_base_majortom"))
    large = load_config(PretrainConfig, shipped_config("pretrain_large_majortom"))
    tiny = load_config(PretrainConfig, shipped_config("pretrain_tiny_cpu.yaml"))
    assert base.model.name == "terrafm_base" and base.optim.epochs == 150
    assert large.model.name == "terrafm_large" and large.optim.epochs == 200
    assert large.train.strategy == "fsdp"
    assert tiny.model.name == "terrafm_tiny" and tiny.train.device == "cpu"
    with pytest.raises(ConfigError, match="no shipped config"):
        shipped_config("pretrain_giant")


def test_ablation_switches() -> None:
    ov = ablation_overrides(["fusion", "dual_centering"])
    cfg = load_config(PretrainConfig, None, ov)
    assert cfg.data.fusion is False and cfg.loss.dual_centering is False
    assert cfg.data.modality_aug is True
    with pytest.raises(ConfigError, match="unknown ablation"):
        ablation_overrides(["ibot"])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("data.global_size=64", "data.multicrop.global_size"),
        ("data.n_local=4", "data.multicrop.n_local"),
        ("data.modality_mode=all_or_one", "data.multicrop.sensor_draw"),
        ("data.keep_prob=0.3", "data.multicrop.keep_p"),
        ("data.ocean_keep=0.1", "data.curation.ocean_keep"),
        ("data.tiles_per_side=1", "data.curation.tiles_per_side"),
        ("data.max_invalid=0.2", "data.quality.max_invalid"),
        ("data.fail_fast=true", "data.quality.fail_fast"),
    ],
)
def test_flat_data_keys_name_their_new_place(tmp_path: Path, old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{old.split('=')[0]}' has moved to '{new}'"):
        load_config(PretrainConfig, None, [old])
    key, value = old.split("=")
    p = _write(tmp_path, {"data": {key.split(".")[1]: yaml.safe_load(value)}})
    with pytest.raises(ConfigError, match=rf"cfg.yaml: config key '{key}' has moved to '{new}'"):
        load_config(PretrainConfig, p)


def test_nested_data_sections_are_the_library_configs() -> None:
    from terrafm.data.loader import CurationConfig, QualityConfig
    from terrafm.data.multicrop import MultiCropConfig

    cfg = load_config(
        PretrainConfig,
        None,
        ["data.curation.require_all=false", "data.quality.mask_clouds=false"],
    )
    assert isinstance(cfg.data.multicrop, MultiCropConfig)
    assert cfg.data.curation == CurationConfig(require_all=False)
    assert cfg.data.quality == QualityConfig(mask_clouds=False)
    # The defaults are the data library's own: one source of truth.
    assert load_config(PretrainConfig).data.multicrop == MultiCropConfig()


def test_upgrade_moved_reads_an_old_flat_layout() -> None:
    cfg = load_config(
        PretrainConfig, None, ["data.multicrop.n_local=4", "data.quality.max_invalid=0.3"]
    )
    old = to_dict(cfg)
    flat = old["data"]
    mc, qu, cu = flat.pop("multicrop"), flat.pop("quality"), flat.pop("curation")
    flat.update(n_local=mc["n_local"], global_size=mc["global_size"], keep_prob=mc["keep_p"])
    flat.update(modality_mode=mc["sensor_draw"], max_invalid=qu["max_invalid"])
    flat.update(ocean_keep=cu["ocean_keep"])
    with pytest.raises(ConfigError, match="has moved"):
        from_dict(PretrainConfig, old)
    assert from_dict(PretrainConfig, upgrade_moved(PretrainConfig, old)) == cfg


def test_a_checkpoint_of_the_flat_layout_resumes() -> None:
    from terrafm.ssl.checkpointing import check_resume_config

    cfg = load_config(PretrainConfig, None, ["data.multicrop.n_local=4"])
    saved = to_dict(cfg)
    mc = saved["data"].pop("multicrop")
    saved["data"].update(n_local=mc["n_local"], modality_mode=mc["sensor_draw"])
    check_resume_config(saved, cfg, "ckpt.pt")  # the old keys are read at their new place
    saved["data"]["n_local"] = 2
    with pytest.raises(ValueError, match=r"data\.multicrop\.n_local"):
        check_resume_config(saved, cfg, "ckpt.pt")


def test_parse_variant_names_and_inline_overrides() -> None:
    from terrafm.config import ConfigError, parse_variant

    named = {"koleo": ["loss.koleo_weight=0.1"]}
    assert parse_variant("koleo", named) == ("koleo", ["loss.koleo_weight=0.1"])
    assert parse_variant("x:optim.lr=1e-3,loss.alpha=0.5", named) == (
        "x",
        ["optim.lr=1e-3", "loss.alpha=0.5"],
    )
    with pytest.raises(ConfigError, match=r"unknown variant 'kolo'.*koleo"):
        parse_variant("kolo", named)
