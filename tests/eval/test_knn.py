"""kNN against a brute-force reference written straight from docs/design.md, "Evaluation protocols / GEO-Bench v1"."""

from __future__ import annotations

import math

import pytest
import torch

from terrafm.eval.knn import knn_evaluate, knn_predict, knn_predict_multilabel


def _reference(train, labels, test, k, t=0.07, num_classes=None, multilabel=False):
    """One test sample at a time: cosine to every train sample, sort, weighted votes."""
    preds = []
    for x in test.tolist():
        sims = []
        for j, y in enumerate(train.tolist()):
            dot = sum(a * b for a, b in zip(x, y))
            sims.append(
                (dot / (math.sqrt(sum(a * a for a in x)) * math.sqrt(sum(b * b for b in y))), j)
            )
        top = sorted(sims, key=lambda s: -s[0])[: min(k, len(sims))]
        if multilabel:
            row = []
            for c in range(labels.shape[1]):
                pos = sum(math.exp(s / t) for s, j in top if labels[j, c] == 1)
                neg = sum(math.exp(s / t) for s, j in top if labels[j, c] == 0)
                row.append(1 if pos > neg else 0)
            preds.append(row)
        else:
            votes = [0.0] * num_classes
            for s, j in top:
                votes[int(labels[j])] += math.exp(s / t)
            preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(preds)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_single_label_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    train, test = torch.randn(60, 8, generator=g), torch.randn(25, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    got = knn_predict(train, labels, test, 4, k=k, chunk=7)
    torch.testing.assert_close(
        got, _reference(train.double(), labels, test.double(), k, num_classes=4)
    )


def test_multilabel_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(40, 6, generator=g), torch.randn(15, 6, generator=g)
    labels = (torch.rand(40, 5, generator=g) > 0.6).long()
    got = knn_predict_multilabel(train, labels, test, k=7)
    torch.testing.assert_close(
        got, _reference(train.double(), labels, test.double(), 7, multilabel=True)
    )


def test_temperature_weighting_can_outvote_a_majority():
    # one very similar neighbour of class 1 against two weaker ones of class 0
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, 2, k=3).item() == 1  # exp(1/.07) > 2 exp(.8/.07)
    assert knn_predict(train, labels, test, 2, k=3, temperature=100.0).item() == 0


def test_k_larger_than_training_set_and_metrics():
    train = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    out = knn_evaluate(train, labels, torch.eye(3), labels, 3, ks=(20, 5))
    assert out == {"knn20": pytest.approx(100.0), "knn5": pytest.approx(100.0)}
    hot = torch.eye(3).long()
    assert knn_evaluate(train, hot, torch.eye(3), hot, 3, multilabel=True, ks=(1,))[
        "knn1"
    ] == pytest.approx(100.0)
