"""``terrafm quickstart`` end to end on the micro preset: outputs, determinism, reuse, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from terrafm.cli import main
from terrafm.config import PretrainConfig, load_config
from terrafm.quickstart.ablation import ABLATION_ROWS, EXTENSION_ROWS, run_ablation_table
from terrafm.quickstart.evaluate import sensor_label
from terrafm.quickstart.pipeline import run_quickstart, variant_name
from terrafm.quickstart.presets import SENSOR_SETS
from terrafm.quickstart.scenes import heldout_scenes
from terrafm.sensors import get_sensor
from terrafm.ssl.data import sensor_plan

HEADLINE = (
    "knn_top1_pretrained",
    "knn_top1_random",
    "miou_pretrained",
    "miou_random",
    "knn_top1_fused_pretrained",
    "wall_seconds",
    "seed",
)
FIGURES = ("loss_curves", "pretrained_vs_random", "pca_rgb", "attention")
ENCODERS = ("pretrained", "random")
RETRIEVAL = tuple(
    f"retrieval_r{k}_{a}_to_{b}" for k in (1, 5) for a, b in (("s1", "s2"), ("s2", "s1"))
)


def _metrics(s: dict[str, Any]) -> dict[str, Any]:
    """Everything measured except times (which differ between runs)."""
    return {enc: {k: {m: v for m, v in r.items() if m != "seconds"} for k, r in per.items()}
            for enc, per in s["results"].items()}  # fmt: skip


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("qs") / "run"
    return out, run_quickstart(out, preset="micro", seed=3)


def test_summary_has_the_issue_keys_and_sane_values(micro: tuple[Path, dict[str, Any]]) -> None:
    out, s = micro
    on_disk = json.loads((out / "summary.json").read_text())
    for key in HEADLINE:
        assert key in on_disk, key
    assert on_disk["seed"] == 3 and on_disk["preset"] == "micro" and on_disk["ablate"] == []
    assert on_disk["wall_seconds"] > 0
    # The top-level keys are the S2 / fused entries of the full results.
    s2, fused = sensor_label(("s2_l2a",)), sensor_label(("s1", "s2_l2a"))
    for enc in ENCODERS:
        r = on_disk["results"][enc]
        assert set(r) == {sensor_label(x) for x in SENSOR_SETS}
        assert on_disk[f"knn_top1_{enc}"] == pytest.approx(r[s2]["knn_top1_fraction"], abs=0.01)
        assert on_disk[f"miou_{enc}"] == pytest.approx(r[s2]["miou"], abs=0.01)
        for res in r.values():
            for m in ("knn_top1_fraction", "knn_top1_full", "linear_top1", "miou"):
                assert 0.0 <= res[m] <= 100.0
            draws = res["knn_top1_fraction_draws"]
            assert res["knn_top1_fraction"] == pytest.approx(np.mean(draws))
    assert on_disk["knn_top1_fused_pretrained"] == pytest.approx(
        on_disk["results"]["pretrained"][fused]["knn_top1_fraction"], abs=0.01
    )
    acc = on_disk["acceptance"]
    assert acc["knn_gain_1pct"] == pytest.approx(
        s["knn_top1_pretrained"] - s["knn_top1_random"], abs=0.02
    )
    assert set(acc["passed"]) and isinstance(acc["all_passed"], bool)
    assert on_disk["pretrain"]["steps"] > 0 and not on_disk["pretrain"]["reused"]
    assert set(on_disk["timing"]["stages"]) == {
        "world",
        "pretrain",
        "evaluate",
        "controls",
        "figures",
    }
    # retrieval and the acceptance block, one entry per check
    for enc in ENCODERS:
        for key in RETRIEVAL:
            assert 0.0 <= on_disk[f"{key}_{enc}"] <= 100.0, key
        for key in ("knn_top1_fused_to_s2", "knn_top1_full_fused_to_s1", "linear_top1_fused"):
            assert 0.0 <= on_disk[f"{key}_{enc}"] <= 100.0, key
    checks = acc["checks"]
    assert acc["issue"] == 14 and len(checks) == 10
    for c in checks:
        assert set(c) == {"check", "values", "threshold", "passed"}
    ret = next(c for c in checks if c["check"].startswith("cross-sensor retrieval"))
    assert ret["values"]["pretrained"] == on_disk["retrieval_r1_s1_to_s2_pretrained"]
    for key in ("knn_top1_pixels", "linear_top1_fused_pixels", "miou_pixels"):
        assert 0.0 <= on_disk[key] <= 100.0, key
    # painting each patch with its majority class beats any probe on the raw pixels
    assert on_disk["miou_patch_majority"] >= on_disk["miou_pixels"]


def test_cross_sensor_numbers_match_a_direct_computation(
    micro: tuple[Path, dict[str, Any]],
) -> None:
    """Retrieval and missing-sensor kNN recomputed from freshly extracted features."""
    out, s = micro
    from terrafm.checkpoint import load_model
    from terrafm.eval import extract_features, knn_evaluate, load_task

    model = load_model(s["pretrain"]["encoder"]).eval()
    task = load_task("folder", "landcover_cls", out / "world" / "tasks")

    def feats(split: str, sensors: tuple[str, ...]) -> Any:
        return extract_features(model, task.dataset(split, sensors), progress=False)

    s1, s2, fused_train = (
        feats("test", ("s1",)),
        feats("test", ("s2_l2a",)),
        feats("train", ("s1", "s2_l2a")),
    )
    assert s1.ids == s2.ids
    q = torch.nn.functional.normalize(s1.pooled("cls"), dim=1)
    g = torch.nn.functional.normalize(s2.pooled("cls"), dim=1)
    sims = q @ g.T
    hits = sum(int(sims[i].argmax()) == i for i in range(len(s1)))  # no ties with float features
    assert s["retrieval_r1_s1_to_s2_pretrained"] == pytest.approx(100 * hits / len(s1), abs=0.01)
    assert s["retrieval_chance_r1"] == pytest.approx(100 / len(s1), abs=0.01)
    for test, key in ((s2, "knn_top1_full_fused_to_s2"), (s1, "knn_top1_full_fused_to_s1")):
        ref = knn_evaluate(fused_train.pooled("cls"), fused_train.labels, test.pooled("cls"),
                           test.labels, task.num_classes, ks=(20,))["knn20"]  # fmt: skip
        assert s[f"{key}_pretrained"] == pytest.approx(ref, abs=0.01)


def test_one_percent_keeps_one_example_per_class(micro: tuple[Path, dict[str, Any]]) -> None:
    out, s = micro
    samples = (out / "world" / "tasks" / "landcover_cls" / "samples.csv").read_text().splitlines()
    train_classes = {row.split(",")[2] for row in samples[1:] if row.split(",")[1] == "train"}
    for per in s["results"].values():
        for res in per.values():
            # A tiny task: 1 % rounds to zero per class, so exactly one example per class.
            assert res["fraction_train_sizes"] == [len(train_classes)] * len(
                res["knn_top1_fraction_draws"]
            )


def test_report_and_figures_are_written(micro: tuple[Path, dict[str, Any]]) -> None:
    out, s = micro
    report = (out / "report.md").read_text()
    assert "## Headline" in report and "## Acceptance" in report
    assert "## Across sensors: retrieval and a missing sensor" in report
    assert "patch-majority ceiling" in report and "raw pixels (control)" in report
    assert f"{s['retrieval_r1_s1_to_s2_pretrained']:.1f}" in report
    assert f"{s['knn_top1_pretrained']:.1f}" in report
    for name in FIGURES:
        path = out / s["figures"][name]
        assert f"]({s['figures'][name]})" in report
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        img = matplotlib.image.imread(path)
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert float(img[..., :3].std()) > 0.05, f"{name} looks blank"


def test_heldout_scenes_are_unseen_test_cells(micro: tuple[Path, dict[str, Any]]) -> None:
    out, _ = micro
    manifest = json.loads((out / "world" / "world.json").read_text())
    scenes = heldout_scenes(manifest, 2)
    assert len(scenes) == 2 and len({sc.target for sc in scenes}) == 2
    rows = (out / "world" / "tasks" / "landcover_seg" / "samples.csv").read_text().splitlines()[1:]
    for sc in scenes:
        assert sc.name not in manifest["pretrain_cells"]
        splits = {r.split(",")[1] for r in rows if r.startswith(sc.name + "_")}
        assert splits == {"test"}
        size = sc.codes.shape[0]
        assert sc.inputs["s2_l2a"].shape == (12, size, size) and size % 16 == 0
        assert sc.inputs["s1"].shape == (2, size, size)
        # z-score with the sensor's statistics (reference: plain arithmetic on band B04)
        st = get_sensor("s2_l2a").stats
        b04 = list(sc.bands).index("B04")
        ref = (sc.s2_dn[b04] - st.mean[3]) / st.std[3]
        np.testing.assert_allclose(sc.inputs["s2_l2a"][3].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_ablation_table_reuses_the_quickstart_run(micro: tuple[Path, dict[str, Any]]) -> None:
    out, s = micro
    rec = run_ablation_table(out, preset="micro", seed=3)
    rows = rec["rows"]
    extension = [t for t, _, _ in EXTENSION_ROWS]
    assert [r["row"] for r in rows] == [t for t, _ in ABLATION_ROWS] + extension + [
        "random init (floor)"
    ]
    assert rows[3]["reused"] and not rows[0]["reused"]
    s2 = sensor_label(("s2_l2a",))
    assert rows[3]["knn_top1_fraction"] == s["results"]["pretrained"][s2]["knn_top1_fraction"]
    assert rows[-1]["miou"] == s["results"]["random"][s2]["miou"]
    ext = load_config(PretrainConfig, out / "pretrain" / EXTENSION_ROWS[0][1] / "config.yaml")
    assert ext.loss.ibot.enabled and ext.loss.dual_centering and ext.data.fusion
    plans = []
    for _, off in ABLATION_ROWS:
        cfg = load_config(PretrainConfig, out / "pretrain" / variant_name(off) / "config.yaml")
        plans.append((sensor_plan(cfg), cfg.loss.dual_centering))
    assert plans == [
        ((["s2_l2a"], "all"), False),  # DINO on S2-L2A only
        ((["s1", "s2_l1c", "s2_l2a"], "one"), False),  # + sensors as augmentation
        ((["s1", "s2_l1c", "s2_l2a"], "independent"), False),  # + fusion
        ((["s1", "s2_l1c", "s2_l2a"], "independent"), True),  # + dual centering
    ]
    md = (out / "ablation.md").read_text()
    assert md.count("\n| ") == 1 + len(rows) and "54.62 / 83.20 / 50.58" in md


def test_cli_fresh_run_is_identical(
    micro: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, s = micro
    out = tmp_path / "cli"
    assert main(["quickstart", "--preset", "micro", "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kNN top-1, 1 % labels, S2" in printed and "pass" in printed.lower()
    fresh = json.loads((out / "summary.json").read_text())
    assert not fresh["pretrain"]["reused"]
    assert fresh["pretrain"]["loss_last"] == s["pretrain"]["loss_last"]
    assert _metrics(fresh) == _metrics(json.loads(json.dumps(s)))


def test_cli_passes_ablations_and_rejects_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import terrafm.quickstart.pipeline as pipeline

    seen: dict[str, Any] = {}

    def fake(out: Path, **kw: Any) -> dict[str, Any]:
        seen.update(kw, out=out)
        raise ValueError("stop here")

    monkeypatch.setattr(pipeline, "run_quickstart", fake)
    assert main(["quickstart", "--ablate", "fusion, dual_centering", "--seed", "5"]) == 2
    assert seen["ablate"] == ["fusion", "dual_centering"] and seen["seed"] == 5
    assert seen["out"] == Path("runs/quickstart-no_dual_centering+fusion")
    monkeypatch.undo()
    assert (
        main(["quickstart", "--preset", "micro", "--ablate", "teleport", "--out", str(tmp_path)])
        == 2
    )
    assert main(["quickstart", "--preset", "huge", "--out", str(tmp_path / "d")]) == 2
    assert (
        main(["quickstart", "--ablation-table", "--ablate", "fusion", "--out", str(tmp_path)]) == 2
    )
    assert not (tmp_path / "d").exists() and not list(tmp_path.iterdir())


def test_cli_rerun_continues_its_own_report_and_refuses_another_seeds(
    micro: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a real finished report (seed 3): the same command goes ahead, another seed is refused
    (tests/quickstart/test_quickstart_outputs.py has the other cases)."""
    import shutil

    import terrafm.quickstart.pipeline as pipeline

    out, _ = micro
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("summary.json", "report.md"):
        shutil.copy(out / name, copy / name)
    reached: list[int] = []

    def fake(out: Path, **kw: Any) -> dict[str, Any]:
        reached.append(kw["seed"])
        raise ValueError("stop here")

    monkeypatch.setattr(pipeline, "run_quickstart", fake)
    args = ["quickstart", "--preset", "micro", "--out", str(copy), "--seed"]
    assert main([*args, "4"]) == 1 and reached == []
    assert (
        "is the report of another run (seed 3, preset micro, ablate [])" in capsys.readouterr().err
    )
    assert main([*args, "3"]) == 2 and reached == [3]
