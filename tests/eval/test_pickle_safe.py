"""The restricted unpickler: plain data passes, anything that would run code is refused unrun."""

from __future__ import annotations

import datetime
import os
import pickle
import sys

import h5py
import numpy as np
import pytest
from fake_benchmarks import (
    GEOBENCH_S2,
    geobench_classes,
    write_geobench_sample,
    write_geobench_task,
)

from terrafm.eval.datasets import load_task
from terrafm.eval.datasets.geobench import read_sample_attrs
from terrafm.eval.datasets.pickle_safe import (
    PickledObject,
    UnsafePickleError,
    bytes_literal,
    safe_load_file,
    safe_loads,
)


class _CreatesFile:
    """Unpickling this with the plain unpickler creates ``path`` (via os.system / open)."""

    def __init__(self, path, how="system"):
        self.path, self.how = str(path), how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.path}",))
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips(protocol):
    data = {
        "bands_order": ["02 - Blue", "03 - Green"],
        "label": np.int64(3),
        "hot": np.array([0, 1, 1], dtype=np.int8),
        "nested": [(1, 2.5, "x", None, True), {"a": {1, 2}}, frozenset({3}), complex(1, 2), b"raw"],
        "when": datetime.datetime(2020, 5, 1, 12, 0),
        "f32": np.float32(1.5),
    }
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    assert out["bands_order"] == data["bands_order"] and out["label"] == 3
    np.testing.assert_array_equal(out["hot"], data["hot"])
    assert out["nested"] == data["nested"] and out["when"] == data["when"] and out["f32"] == 1.5


@pytest.mark.parametrize("how", ["system", "open"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"label": 1, "x": _CreatesFile(marker, how)})
    # Sanity: the plain unpickler would run it.
    if how == "open":
        pickle.loads(payload)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl") as e:
        safe_loads(payload, "evil.pkl")
    assert "nothing in the file was run" in str(e.value)
    assert not marker.exists()


def test_metadata_mode_still_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        safe_loads(pickle.dumps(_CreatesFile(marker)), "x.hdf5", metadata=True)
    assert not marker.exists()


def test_object_arrays_and_subclasses_refused():
    with pytest.raises(UnsafePickleError, match="object"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object)), "obj.pkl")
    with pytest.raises(UnsafePickleError, match=r"not allowed|refusing"):
        safe_loads(pickle.dumps(np.ma.masked_array([1, 2])), "sub.pkl")


def test_truncated_pickle_is_a_clear_error():
    with pytest.raises(UnsafePickleError, match=r"broken\.pkl: not a readable pickle"):
        safe_loads(pickle.dumps({"a": 1})[:-3], "broken.pkl")


def test_bytes_literal_parses_the_published_string_form():
    raw = pickle.dumps({"a": 1})
    assert bytes_literal(str(raw), "f.hdf5") == raw
    with pytest.raises(UnsafePickleError, match=r"f\.hdf5"):
        bytes_literal("__import__('os').system('true')", "f.hdf5")
    with pytest.raises(UnsafePickleError, match="not a bytes literal"):
        bytes_literal("'text'", "f.hdf5")


def test_geobench_metadata_classes_become_inert_records(tmp_path):
    path = tmp_path / "s.hdf5"
    with geobench_classes() as mod:
        write_geobench_sample(path, {"02 - Blue": np.ones((4, 4), np.int16)}, 7, mod)
    assert "geobench.dataset" not in sys.modules  # the reader cannot import it
    attrs = read_sample_attrs(path)
    assert attrs["label"] == 7 and attrs["bands_order"] == ["02 - Blue"]
    info = attrs["02 - Blue"]["band_info"]
    assert isinstance(info, PickledObject) and info.origin == ("geobench.dataset", "Sentinel2")
    assert info.get("name") == "02 - Blue"
    assert mod.calls == []  # the module's own code never ran


def test_crafted_hdf5_attribute_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "gb"
    d = write_geobench_task(root, "m-eurosat", GEOBENCH_S2, 10, size=16, counts=(2, 1, 1))
    marker = tmp_path / "pwned"
    victim = d / "id_train_0000.hdf5"
    with h5py.File(victim, "a") as f:
        f.attrs["pickle"] = str(
            pickle.dumps({"bands_order": list(GEOBENCH_S2), "label": _CreatesFile(marker)})
        )
    task = load_task("geobench", "m-eurosat", root)
    ds = task.dataset("train")
    with pytest.raises(Exception, match=r"id_train_0000\.hdf5") as e:
        ds[0]
    assert "refusing to unpickle" in str(e.value)
    assert not marker.exists()
    assert ds[1]["label"].item() == 1  # the other samples still read


def test_task_specs_pkl_is_never_opened_and_safe_load_refuses_it(tmp_path):
    root = tmp_path / "gb"
    d = write_geobench_task(root, "m-brick-kiln", GEOBENCH_S2, 2, size=16, counts=(2, 1, 1))
    marker = tmp_path / "pwned"
    (d / "task_specs.pkl").write_bytes(pickle.dumps(_CreatesFile(marker, "open")))
    task = load_task("geobench", "m-brick-kiln", root)
    assert task.dataset("test")[0]["inputs"]["s2_l1c"].shape[0] == 12
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"task_specs\.pkl"):
        safe_load_file(d / "task_specs.pkl", metadata=True)
    assert not marker.exists()
