"""The held-out tasks are learnable but not trivially separable by band means."""

from __future__ import annotations

import numpy as np
import pytest

from terrafm.world.cells import RenderCache
from terrafm.world.generate import WorldConfig, plan_world
from terrafm.world.tasks import chip_rasters, plan_chips, render_heldout, split_cells


def _chips(
    per_class: int, size: int, chip: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Classification chips of a world's held-out cells, as the task writer makes them."""
    cfg = WorldConfig(
        cells=1, cell_size=size, seed=seed, task_cells_per_class=per_class, cls_chip=chip
    )
    plan = plan_world(cfg)
    cache = RenderCache(2**28)
    chips = plan_chips(
        [cache.scene(p).codes for p in plan.heldout], chip, chip, cfg.min_purity, seed
    )
    data: dict[str, list[np.ndarray]] = {"s2_l2a": [], "s1": []}
    labels, groups = [], []
    for j, (p, kept) in enumerate(zip(plan.heldout, chips.cls)):
        cell = render_heldout(p, plan.heldout_splits[j], cache)
        for y, x, code in kept:
            r = chip_rasters(cell, np.random.default_rng([seed, j, y, x]), y, x, chip)
            for k in data:
                data[k].append(r[k].astype(np.float32))
            labels.append(chips.cls_codes.index(code))
            groups.append(j)
    return {k: np.stack(v) for k, v in data.items()}, np.array(labels), np.array(groups)


def _grouped_folds(groups: np.ndarray, k: int = 4) -> list[np.ndarray]:
    """Test masks of k folds that never split a cell (its chips share a scene)."""
    cells = np.unique(groups)
    fold_of = {c: i % k for i, c in enumerate(np.random.default_rng(0).permutation(cells))}
    f = np.array([fold_of[g] for g in groups])
    return [f == i for i in range(k)]


def _linear_accuracy(feats: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> float:
    """Cross-validated accuracy of a ridge (least-squares, one-vs-rest) linear classifier on
    z-scored features plus a bias."""
    correct = 0
    onehot = np.eye(int(y.max()) + 1)[y]
    for test in folds:
        train = ~test
        mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
        x = np.concatenate([(feats - mu) / sd, np.ones((len(feats), 1))], axis=1)
        gram = x[train].T @ x[train] + 1.0 * np.eye(x.shape[1])
        w = np.linalg.solve(gram, x[train].T @ onehot[train])
        correct += int(((x[test] @ w).argmax(1) == y[test]).sum())
    return correct / len(y)


def _centroid_accuracy(feats: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> float:
    correct = 0
    for test in folds:
        train = ~test
        mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
        z = (feats - mu) / sd
        classes = np.unique(y[train])
        cent = np.stack([z[train][y[train] == c].mean(0) for c in classes])
        pred = classes[np.argmin(((z[test][:, None] - cent[None]) ** 2).sum(-1), axis=1)]
        correct += int((pred == y[test]).sum())
    return correct / len(y)


def _texture(x: np.ndarray) -> np.ndarray:
    """Per-band spatial statistics: standard deviation and mean absolute gradient, (N, 2C)."""
    grad = np.abs(np.diff(x, axis=3)).mean((2, 3)) + np.abs(np.diff(x, axis=2)).mean((2, 3))
    return np.concatenate([x.std((2, 3)), grad], axis=1)


def _measure(data: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Cross-validated accuracies of simple classifiers on chip features."""
    folds = _grouped_folds(groups)
    s2, s1 = data["s2_l2a"], data["s1"]
    means = s2.mean((2, 3))  # (N, 12) per-band means
    rich = np.concatenate([means, _texture(s2), s1.mean((2, 3)), _texture(s1)], axis=1)
    return {
        "chance": float(np.bincount(y).max() / len(y)),
        "centroid_means": _centroid_accuracy(means, y, folds),
        "linear_means": _linear_accuracy(means, y, folds),
        "best_single_band": max(_linear_accuracy(means[:, [b]], y, folds) for b in range(12)),
        "linear_texture_s1": _linear_accuracy(rich, y, folds),
    }


@pytest.fixture(scope="module")
def small_task() -> dict[str, float]:
    data, y, groups = _chips(per_class=4, size=96, chip=32, seed=1)
    assert len(np.unique(y)) >= 9 and len(y) >= 200
    return _measure(data, y, groups)


def test_band_means_do_not_separate_the_classes(small_task: dict[str, float]) -> None:
    acc = small_task
    assert acc["chance"] < acc["best_single_band"] < 0.5
    assert acc["centroid_means"] < 0.75 and acc["linear_means"] < 0.75


def test_texture_and_radar_make_the_task_learnable(small_task: dict[str, float]) -> None:
    acc = small_task
    assert acc["linear_texture_s1"] > acc["linear_means"] + 0.15
    assert acc["linear_texture_s1"] > 0.65


@pytest.mark.slow
def test_quickstart_sized_task_separability() -> None:
    """The quickstart geometry (64 px chips from 192 px cells): means alone stay well short of
    what texture and radar give."""
    acc = _measure(*_chips(per_class=8, size=192, chip=64, seed=0))
    assert acc["linear_means"] < 0.75 and acc["best_single_band"] < 0.5
    assert acc["linear_texture_s1"] > max(0.8, acc["linear_means"] + 0.15)


def test_splits_are_by_cell_and_stratified() -> None:
    targets = [c for c in (10, 20, 30) for _ in range(5)]
    splits = split_cells(targets, (0.6, 0.2, 0.2), seed=0)
    for c in (10, 20, 30):
        mine = [s for s, t in zip(splits, targets) if t == c]
        assert sorted(mine) == ["test", "train", "train", "train", "val"]
    assert split_cells(targets, (0.6, 0.2, 0.2), seed=0) == splits


def test_make_world_says_when_a_task_is_empty(tmp_path, capsys, caplog):
    """Too few held-out cells for the purity filter: the run says which task is unusable."""
    import logging

    from terrafm.cli import main

    with caplog.at_level(logging.WARNING):
        args = ["make-world", "--out", str(tmp_path / "w"), "--cells", "8", "--cell-size", "96"]
        assert main([*args, "--task-cells-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "tasks/landcover_cls: classification, 0 classes, no samples" in out
    assert (
        "tasks/landcover_cls is empty: no held-out chip qualified; raise --task-cells-per-class "
        "(now 1) or --cell-size (now 96)" in caplog.text
    )
    assert "tasks/landcover_seg has no test samples" in caplog.text
