"""Published numbers are matched to runs by task, protocol, sensors and training partition."""

from __future__ import annotations

from terrafm.eval.published import PUBLISHED, published_for
from terrafm.eval.report import markdown_report


def test_published_lookup():
    rows = published_for("geobench", "m-eurosat", "knn", ["s2_l1c"], "0.01x_train")
    assert {r.model: r.value for r in rows} == {
        "Galileo-B": 56.6,
        "CROMA-B": 51.3,
        "TerraFM-B": 59.3,
        "TerraFM-L": 62.1,
    }
    ben = published_for("copernicus", "bigearthnet_s2", "linear", ["s2_l2a"])
    assert {r.model: r.value for r in ben}["TerraFM-B"] == 84.4 and ben[0].metric == "micro_map"
    assert (
        published_for("copernicus", "bigearthnet_s1s2", "linear", ["s1", "s2_l2a"]) == []
    )  # fused: unpublished
    seg = published_for("geobench", "m-sa-crop-type", "seg-linear", ["s2_l2a"])
    assert {r.model: r.value for r in seg} == {
        "TerraFM-B": 33.0,
        "TerraFM-L": 34.5,
        "Galileo-B": 30.1,
    }
    assert len(PUBLISHED) == 32 + 18 + 56 + 4


def test_markdown_sets_numbers_beside_published():
    result = {"benchmark": "geobench", "task": "m-bigearthnet", "protocol": "knn", "sensors": ["s2_l2a"],
              "partition": "default", "train_subset": "default", "primary": "micro_f1",
              "metrics": {"micro_f1": 61.25, "micro_f1@k5": 60.0}, "n_train": 20000, "n_test": 1000,
              "seconds": 3.0, "notes": ["a note"]}  # fmt: skip
    md = markdown_report([result], "t", {"name": "terrafm_base", "weights": "x.pth"})
    assert (
        "| geobench/m-bigearthnet | knn | s2_l2a | default | micro_f1 | **61.2** | Galileo-B 59.0 · CROMA-B 58.8 · TerraFM-B 68.7 · TerraFM-L 69.4 |"
        in md
    )
    assert "micro_f1@k5 60.0" in md and "  - a note" in md
