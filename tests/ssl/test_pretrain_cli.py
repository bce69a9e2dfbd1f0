"""`terrafm pretrain` / `terrafm export` end to end on a tiny built-in world (CLI smoke)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from terrafm.cli import main
from terrafm.models import create_model


def test_cli_pretrain_resume_export(
    mini_world: Path, pretrain_cli: Callable[..., int], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert pretrain_cli(mini_world, out, "train.max_steps=2") == 0
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs and all(isinstance(r["loss"], float) and r["loss"] > 0 for r in recs)
    assert (out / "loss_curve.png").stat().st_size > 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["root"] == str(mini_world) and saved["model"]["name"] == "terrafm_tiny"
    # Same run continued: refused without --resume, continued with it.
    assert pretrain_cli(mini_world, out, "train.max_steps=3") == 2
    assert pretrain_cli(mini_world, out, "train.max_steps=3", opts=("--resume",)) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert main(["export", str(out), "--out", str(tmp_path / "ours")]) == 0
    model = create_model("terrafm_tiny", pretrained=tmp_path / "ours.pth")
    state = torch.load(out / "checkpoint.pt", weights_only=True)["teacher"]
    torch.testing.assert_close(model.state_dict()["norm.weight"], state["backbone.norm.weight"])
    assert (tmp_path / "ours.safetensors").is_file()


def test_cli_ablation_and_config_errors(
    mini_world: Path, pretrain_cli: Callable[..., int], tmp_path: Path, caplog
) -> None:
    out = tmp_path / "ablate"
    code = pretrain_cli(
        mini_world, out, "train.max_steps=1", opts=("--ablate", "fusion,dual_centering")
    )
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["fusion"] is False and saved["loss"]["dual_centering"] is False
    assert pretrain_cli(mini_world, tmp_path / "bad", "optim.lrr=1") == 2
    assert "unknown config key 'optim.lrr'" in caplog.text
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
