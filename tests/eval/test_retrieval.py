"""Cross-sensor retrieval: recall@k against a plain loop, chance level, ties, the protocol and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from terrafm.cli import main
from terrafm.eval import evaluate, load_task
from terrafm.eval.datasets.folder import FolderSample, write_folder_task
from terrafm.eval.retrieval import chance_recall, match_ids, recall_at_k, retrieval_metrics
from terrafm.sensors import get_sensor

S2 = list(get_sensor("s2_l2a").band_names)


def _plain_recall(query: list[list[float]], gallery: list[list[float]], k: int) -> float:
    """Reference: explicit loops, cosine by hand; a tie is broken by averaging every order."""
    total = 0.0
    for i, q in enumerate(query):
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for g in gallery:
            gn = math.sqrt(sum(v * v for v in g))
            sims.append(sum(a * b for a, b in zip(q, g)) / (qn * gn))
        above = sum(1 for j, s in enumerate(sims) if j != i and s > sims[i])
        tied = sum(1 for j, s in enumerate(sims) if j != i and s == sims[i])
        # the match lands at each of the positions above .. above + tied with equal probability
        total += sum(1 for pos in range(above, above + tied + 1) if pos < k) / (tied + 1)
    return 100.0 * total / len(query)


def test_recall_matches_a_plain_loop_on_noisy_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    place = torch.randn(40, 8, generator=g)
    query = place + 0.8 * torch.randn(40, 8, generator=g)  # the same place, another "sensor"
    gallery = place + 0.8 * torch.randn(40, 8, generator=g)
    got = recall_at_k(query, gallery, (1, 5, 10), chunk=7)  # chunks cover the offset logic
    for k in (1, 5, 10):
        assert got[k] == pytest.approx(_plain_recall(query.tolist(), gallery.tolist(), k), abs=1e-9)
    assert 0 < got[1] < got[5] < got[10] < 100  # noisy enough to miss, informative enough to hit


def test_ties_are_broken_fairly_and_a_collapsed_encoder_scores_chance() -> None:
    # Integer features with many exact ties (cosine of equal directions).
    q = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 1], [2, 2], [0, 3]])
    gal = torch.tensor([[2.0, 0], [1, 1], [0, 1], [1, 0], [1, 1], [0, 1]])
    for k in (1, 2, 5):
        assert recall_at_k(q, gal, (k,))[k] == pytest.approx(
            _plain_recall(q.tolist(), gal.tolist(), k), abs=1e-9
        )
    flat = torch.ones(50, 4)  # every embedding the same point
    assert recall_at_k(flat, flat, (1, 5)) == pytest.approx(chance_recall(50, (1, 5)))
    assert chance_recall(50, (1, 5)) == {1: 2.0, 5: 10.0}
    assert chance_recall(3, (5,)) == {5: 100.0}


def test_perfect_pairs_and_both_directions() -> None:
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(1))
    m = retrieval_metrics(x, 3.0 * x, ("s1", "s2"))  # scale does not change cosine
    assert m["r1_s1_to_s2"] == m["r1_s2_to_s1"] == 100.0
    assert m["chance_r1"] == pytest.approx(100 / 12) and m["chance_r5"] == pytest.approx(500 / 12)
    shuffled = retrieval_metrics(x, x.roll(1, 0), ("a", "b"))
    assert shuffled["r1_a_to_b"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        recall_at_k(x, x[:5])
    assert match_ids(["a", "b", "c"], ["c", "a"]) == ([0, 2], [1, 0])


class _ColumnProfile(nn.Module):
    """CLS = the centred column profile of channel 0 of whichever sensor it sees (shared across
    sensors up to a positive scale, which cosine similarity ignores)."""

    patch_size = 16

    def forward_features(self, inputs, masks=None):
        x = next(iter(inputs.values())).float()
        cls = x[:, 0].mean(1)  # (B, W)
        cls = cls - cls.mean(1, keepdim=True)
        b, _, h, w = x.shape
        return {"x_norm_clstoken": cls, "x_norm_patchtokens": torch.zeros(b, h * w // 256, 4)}


def _paired_task(tmp_path):
    """Each sample's S1 and S2 share a random column pattern: retrieval is perfect for an encoder
    that reads it from either sensor, whatever the sample order on disk."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(10):
        pattern = rng.uniform(-1, 1, 32)
        s2 = np.broadcast_to(1500 + 400 * pattern, (12, 32, 32)).astype(np.uint16)
        s1 = np.broadcast_to(-15 + 3 * pattern, (2, 32, 32)).astype(np.float32)
        samples.append(FolderSample(f"c{i}", "train" if i < 2 else "test",
                                    {"s2_l2a": s2, "s1": s1}, i % 2, None))  # fmt: skip
    sensors = {"s2_l2a": {"bands": S2, "unit": "DN"}, "s1": {"bands": ["VV", "VH"], "unit": "dB"}}
    return write_folder_task(tmp_path / "paired", "pairs", "classification", ["a", "b"], sensors,
                             samples)  # fmt: skip


def test_protocol_pairs_samples_by_id(tmp_path) -> None:
    task = load_task("folder", None, _paired_task(tmp_path))
    r = evaluate(_ColumnProfile(), task, "retrieval", progress=False)
    assert r["protocol"] == "retrieval" and r["query"] == ["s1"] and r["gallery"] == ["s2_l2a"]
    assert r["primary"] == "r1_s1_to_s2_l2a" and r["n_test"] == 8
    assert r["metrics"]["r1_s1_to_s2_l2a"] == 100.0 and r["metrics"]["r1_s2_l2a_to_s1"] == 100.0
    assert r["metrics"]["chance_r1"] == pytest.approx(12.5)
    with pytest.raises(ValueError, match="two sensor groups"):
        evaluate(_ColumnProfile(), task, "retrieval", ["s1"], progress=False)
    with pytest.raises(ValueError, match="same sensors"):
        evaluate(_ColumnProfile(), task, "retrieval", ["s1", "s1"], progress=False)


def test_protocol_needs_both_sensors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    samples = [FolderSample(f"p{i}", "test", {"s2_l2a": rng.integers(0, 3000, (12, 16, 16))
                                               .astype(np.uint16)}, 0, None) for i in range(3)]  # fmt: skip
    root = write_folder_task(tmp_path / "s2only", "s2only", "classification", ["a"],
                             {"s2_l2a": {"bands": S2, "unit": "DN"}}, samples)  # fmt: skip
    with pytest.raises(ValueError, match="needs S1 and S2"):
        evaluate(_ColumnProfile(), load_task("folder", None, root), "retrieval", progress=False)


def test_cli_retrieval_with_tiny_encoder(tmp_path, capsys) -> None:
    root = _paired_task(tmp_path)
    out = tmp_path / "run"
    rc = main(["eval", "--benchmark", "folder", "--data-root", str(root), "--protocol", "retrieval",
               "--model", "terrafm_tiny", "--sensors", "s1", "s2_l2a", "--out", str(out),
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    (r,) = json.loads((out / "result.json").read_text())["results"]
    assert r["sensors"] == ["s1->s2_l2a"] and r["n_test"] == 8
    for key in ("r1_s1_to_s2_l2a", "r5_s1_to_s2_l2a", "r1_s2_l2a_to_s1", "r5_s2_l2a_to_s1"):
        assert 0.0 <= r["metrics"][key] <= 100.0
    assert r["metrics"]["chance_r5"] == pytest.approx(62.5)
    assert "retrieval [s1->s2_l2a] r1_s1_to_s2_l2a" in capsys.readouterr().out
    assert "| folder/pairs | retrieval | s1->s2_l2a |" in (out / "report.md").read_text()
