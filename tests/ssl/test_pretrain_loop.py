"""The pretraining loop: exact resume, faults, SIGTERM, outputs (docs/design.md, "Objective")."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from terrafm.checkpoint import load_model, read_metadata
from terrafm.ssl.batch import RandomSource
from terrafm.ssl.checkpointing import load_training_state
from terrafm.ssl.export import export_run
from terrafm.ssl.train import NonFiniteLossError, pretrain


def _source(**kw) -> RandomSource:
    return RandomSource(4, steps_per_epoch=3, global_size=32, local_size=16, n_local=2, **kw)


def _assert_same_state(a: dict, b: dict) -> None:
    for part in ("student", "teacher", "loss"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-6, msg=f"{part}.{k}")
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(sa) == set(sb)
    for k in sa:
        for field in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sa[k][field], sb[k][field], rtol=0, atol=1e-6)
    assert a["step"] == b["step"]


def test_resume_is_exact(tiny_cfg) -> None:
    # 4 straight steps; the run crosses an epoch boundary (3 steps per epoch).
    straight = pretrain(tiny_cfg("train.max_steps=4", out="straight"), _source())
    assert straight.step == 4 and straight.stopped == "max_steps"
    first = pretrain(tiny_cfg("train.max_steps=2", out="resumed"), _source())
    assert first.step == 2
    with pytest.raises(FileExistsError):  # never silently overwrite a run
        pretrain(tiny_cfg("train.max_steps=4", out="resumed"), _source())
    resumed = pretrain(tiny_cfg("train.max_steps=4", out="resumed"), _source(), resume=True)
    assert resumed.step == 4
    _assert_same_state(
        load_training_state(straight.checkpoint), load_training_state(resumed.checkpoint)
    )
    # The metrics log of the resumed run reads like the straight one.
    steps = [json.loads(line)["step"] for line in resumed.metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_photometric_jitter_changes_the_run_and_resumes_exactly(tiny_cfg) -> None:
    on = "data.photometric.prob=1.0"
    plain = pretrain(tiny_cfg("train.max_steps=3", out="plain"), _source())
    straight = pretrain(tiny_cfg("train.max_steps=3", on, out="straight"), _source())
    a, b = load_training_state(plain.checkpoint), load_training_state(straight.checkpoint)
    assert any(not torch.equal(a["student"][k], b["student"][k]) for k in a["student"])
    pretrain(tiny_cfg("train.max_steps=2", on, out="resumed"), _source())
    resumed = pretrain(tiny_cfg("train.max_steps=3", on, out="resumed"), _source(), resume=True)
    _assert_same_state(b, load_training_state(resumed.checkpoint))


def test_resume_refuses_changed_recipe(tiny_cfg) -> None:
    pretrain(tiny_cfg("train.max_steps=1"), _source())
    with pytest.raises(ValueError, match=r"optim\.lr"):
        pretrain(tiny_cfg("train.max_steps=2", "optim.lr=0.1"), _source(), resume=True)


def test_run_outputs(tiny_cfg) -> None:
    res = pretrain(tiny_cfg(), _source())
    assert res.stopped == "done" and res.step == 6
    out = res.output_dir
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "loss_curve.png",
        "checkpoint.pt",
        "encoder.safetensors",
    ):
        assert (out / name).is_file(), name
    recs = [json.loads(line) for line in res.metrics.read_text().splitlines()]
    for key in (
        "loss",
        "lr",
        "wd",
        "momentum",
        "teacher_temp",
        "teacher_entropy",
        "center_norm",
        "center_h_norm",
        "images_per_s",
    ):
        assert all(key in r for r in recs), key
    assert all(r["loss"] > 0 for r in recs)
    assert recs[-1]["center_h_norm"] > 0  # classes 10 and 30 are frequent in RandomSource
    # The exported encoder is the teacher backbone and loads through the public API.
    model = load_model(res.encoder)
    ck = load_training_state(res.checkpoint)
    torch.testing.assert_close(
        model.state_dict()["norm.weight"], ck["teacher"]["backbone.norm.weight"]
    )
    assert read_metadata(res.encoder)["pretrain_step"] == 6
    pth, st = export_run(out, out / "export" / "terrafm_tiny_ours")
    state = torch.load(pth, weights_only=True)
    assert "blocks.0.attn.qkv.weight" in state and "patch_embed.projection.queries" not in state
    torch.testing.assert_close(state["pos_embed"], ck["teacher"]["backbone.pos_embed"])
    assert read_metadata(st)["weights"] == "teacher"


class _NaNSource(RandomSource):
    """Noise batches with NaN inputs at the given batch positions (epoch * steps + i)."""

    def __init__(self, bad: set[int], **kw):
        super().__init__(4, steps_per_epoch=3, global_size=32, local_size=16, n_local=2, **kw)
        self.bad = bad

    def batch(self, epoch: int, i: int):
        b = super().batch(epoch, i)
        if epoch * self.steps_per_epoch + i in self.bad:
            for v in b["teacher"] + b["student_global"]:
                for x in v["inputs"].values():
                    x.fill_(float("nan"))
        return b


def test_isolated_nonfinite_step_is_skipped_and_counted(tiny_cfg) -> None:
    res = pretrain(tiny_cfg(), _NaNSource({2}))
    assert res.step == 6 and res.nonfinite_total == 1
    recs = [json.loads(line) for line in res.metrics.read_text().splitlines()]
    assert [r["step"] for r in recs if r["skipped"]] == [3]


def test_nonfinite_streak_stops_with_last_good_checkpoint(tiny_cfg) -> None:
    cfg = tiny_cfg("train.max_nonfinite=2", "train.checkpoint_every=2")
    with pytest.raises(NonFiniteLossError, match=r"step 2\) is intact"):
        pretrain(cfg, _NaNSource({3, 4, 5}))
    ck = load_training_state(Path(cfg.train.output_dir) / "checkpoint.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["student"].values())


class _SigtermSource(RandomSource):
    def batch(self, epoch: int, i: int):
        if epoch == 0 and i == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while step 3 runs
        return super().batch(epoch, i)


def test_sigterm_writes_checkpoint_and_resumes(tiny_cfg) -> None:
    src = _SigtermSource(4, steps_per_epoch=3, global_size=32, local_size=16, n_local=2)
    res = pretrain(tiny_cfg(), src)
    assert res.stopped == "signal" and res.step == 3
    assert load_training_state(res.checkpoint)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored
    done = pretrain(tiny_cfg(), _source(), resume=True)
    assert done.step == 6 and done.stopped == "done"
