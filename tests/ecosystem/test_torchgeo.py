"""torchgeo interop: sample dicts both ways on real EuroSAT-MS files, weights enums, get_model.

The adapters need only torchvision; the tests using the ``torchgeo`` fixture import torchgeo itself
(the ``torchgeo`` extra) and skip only when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import terrafm
from terrafm import weights
from terrafm.eval.datasets import load_task
from terrafm.integrations.torchgeo import (
    TerraFMBase16_Weights,
    TerraFMLarge16_Weights,
    TorchGeoSamples,
    ToTerraFM,
    collate,
    get_model,
    get_model_weights,
    get_weight,
    list_models,
    to_model_inputs,
    to_torchgeo_sample,
)
from terrafm.models.vit import InputError
from terrafm.sensors import BandError, get_sensor
from terrafm.weights import UnverifiedWeightsError, Weights, sha256_file

from .conftest import REPO

EUROSAT = REPO.parent / "shared" / "data" / "real" / "eurosat-ms-geotorchai"
EUROSAT_ORDER = [*[f"B{i:02d}" for i in range(1, 13)], "B8A"]  # as the files store them
STEM = list(get_sensor("s2_l1c").band_names)


@pytest.fixture(scope="module")
def eurosat() -> Path:
    if not EUROSAT.is_dir():
        pytest.fail(f"real EuroSAT-MS samples not found at {EUROSAT}")
    return EUROSAT


def _reference(raw: np.ndarray) -> torch.Tensor:
    """Plain computation: reorder the 13 file bands to the 12 stem bands, z-score with L1C stats."""
    st = get_sensor("s2_l1c").stats
    rows = [(raw[EUROSAT_ORDER.index(b)] - st.mean[i]) / st.std[i] for i, b in enumerate(STEM)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


# --------------------------------------------------------------------------- terrafm -> torchgeo
def test_eval_dataset_as_torchgeo_samples(eurosat):
    task = load_task("eurosat", None, eurosat, image_size=64)
    ds = task.dataset("train")
    tg = TorchGeoSamples(ds)
    assert len(tg) == len(ds) > 0
    s = tg[0]
    assert set(s) == {"image", "label", "id"}
    assert s["image"].shape == (12, 64, 64) and s["label"].dtype == torch.long
    ref = ds.refs[0]
    with rasterio.open(ref.key) as f:  # the file the reader used
        raw = f.read().astype(np.float64)
    torch.testing.assert_close(s["image"], _reference(raw), rtol=1e-5, atol=1e-5)
    assert task.classes[int(s["label"])] in ref.id
    batch = collate([tg[i] for i in range(3)] + [{"error": "bad.tif: truncated", "id": "x"}])
    assert batch["image"].shape == (3, 12, 64, 64) and batch["label"].shape == (3,)
    assert batch["skipped"] == ["bad.tif: truncated"] and len(batch["id"]) == 3
    with torch.no_grad():
        emb = terrafm.create_model("terrafm_tiny").eval()(to_model_inputs(batch, "s2_l1c"))
    assert emb.shape == (3, 96) and torch.isfinite(emb).all()


def test_multi_sensor_and_segmentation_keys():
    s1, s2 = torch.zeros(2, 4, 4), torch.ones(12, 4, 4)
    item = {
        "inputs": {"s1": s1, "s2_l2a": s2},
        "mask": torch.zeros(4, 4, dtype=torch.long),
        "id": "a",
    }
    s = to_torchgeo_sample(item)
    assert set(s) == {"image_s1", "image_s2_l2a", "mask", "id"} and s["image_s1"] is s1
    batch = collate([s, s])
    inputs = to_model_inputs(batch)
    assert set(inputs) == {"s1", "s2_l2a"} and inputs["s1"].shape == (2, 2, 4, 4)
    with pytest.raises(InputError, match="needs sensor="):
        to_model_inputs({"image": s2[None]})
    with pytest.raises(InputError, match="image_<sensor>"):
        to_model_inputs({"image_dem": s1[None]})


# --------------------------------------------------------------------------- torchgeo -> terrafm
def test_to_terrafm_transform_on_real_files(eurosat):
    files = sorted(eurosat.glob("Forest/*.tif"))[:2]
    raws = []
    for path in files:
        with rasterio.open(path) as f:
            raws.append(f.read().astype(np.float32))
    t = ToTerraFM("s2_l1c", EUROSAT_ORDER)
    one = t({"image": torch.from_numpy(raws[0]), "label": torch.tensor(1)})
    torch.testing.assert_close(
        one["image"], _reference(raws[0].astype(np.float64)), rtol=1e-5, atol=1e-4
    )
    assert int(one["label"]) == 1
    batched = t({"image": torch.from_numpy(np.stack(raws))})["image"]  # (B, C, H, W) works too
    torch.testing.assert_close(
        batched[1], _reference(raws[1].astype(np.float64)), rtol=1e-5, atol=1e-4
    )
    scaled = ToTerraFM("s2_l1c", EUROSAT_ORDER, scale=1e4)(
        {"image": torch.from_numpy(raws[0] / 1e4)}
    )
    torch.testing.assert_close(scaled["image"], one["image"], rtol=1e-4, atol=1e-3)
    with pytest.raises(BandError, match="missing band"):
        ToTerraFM("s2_l1c", EUROSAT_ORDER[:-1])


def test_to_terrafm_uses_the_weights_entry_statistics(tiny_files):
    w = weights.register_checkpoint(tiny_files["safetensors"], name="terrafm_tiny.tg")
    x = torch.full((2, 8, 8), -12.0)
    out = ToTerraFM("s1", ["VV", "VH"], weights="terrafm_tiny.tg", key="image_s1")({"image_s1": x})
    st = w.stats["s1"]
    assert out["image_s1"][0, 0, 0].item() == pytest.approx((-12.0 - st.mean[0]) / st.std[0])


# --------------------------------------------------------------------------- weights enums
def test_weights_enums_mirror_the_registry(tmp_path):
    w = TerraFMBase16_Weights.MAJOR_TOM
    assert w.url == weights.get_weights("terrafm_base.published").resolved_url()
    assert w.meta["model"] == "terrafm_base" and w.meta["bands"]["s1"] == ["VV", "VH"]
    assert w.meta["in_chans"] == {"s1": 2, "s2_l1c": 12, "s2_l2a": 12}
    assert get_weight("TerraFMLarge16_Weights.MAJOR_TOM") is TerraFMLarge16_Weights.MAJOR_TOM
    assert get_model_weights("terrafm_large") is TerraFMLarge16_Weights
    assert TerraFMBase16_Weights.verify("MAJOR_TOM") is w
    assert list_models() == terrafm.list_models()
    transform = w.transforms(sensor="s2_l2a", bands=STEM)
    assert isinstance(transform, ToTerraFM) and transform.stats == get_sensor("s2_l2a").stats
    # Loading goes through the registry: no hash known, nothing downloaded.
    with pytest.raises(UnverifiedWeightsError):
        w.get_state_dict(cache_dir=tmp_path)
    with pytest.raises(UnverifiedWeightsError):
        get_model("terrafm_base", "TerraFMBase16_Weights.MAJOR_TOM", cache_dir=tmp_path)
    assert not any(tmp_path.rglob("*.pth"))


def test_get_model_with_registry_weights(tiny, tiny_files, tmp_path, assert_same):
    pth = tiny_files["pth"]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "tiny.pth").write_bytes(pth.read_bytes())
    entry = weights.register_weights(
        Weights(name="terrafm_tiny.tgw", model="terrafm_tiny", filename="tiny.pth",
                url="file://" + str(tmp_path) + "/{revision}/{filename}", revision="r",
                sha256=sha256_file(pth))
    )  # fmt: skip
    assert_same(tiny, get_model("terrafm_tiny", entry, cache_dir=tmp_path / "c"))
    assert_same(tiny, get_model("terrafm_tiny", str(tiny_files["safetensors"])))
    assert get_model("terrafm_tiny").embed_dim == 96


# --------------------------------------------------------------------------- with torchgeo
@pytest.fixture(scope="module")
def torchgeo():
    return pytest.importorskip(
        "torchgeo", exc_type=ModuleNotFoundError, reason="the 'torchgeo' extra is not installed"
    )


def _torchgeo_eurosat_root(src: Path, dst: Path, per_class: int = 2) -> list[str]:
    """torchgeo's EuroSAT layout over the real files (symlinks, nothing copied) + a split list."""
    base = dst / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    names = []
    for cls in ("AnnualCrop", "Forest", "SeaLake"):
        (base / cls).mkdir(parents=True)
        for f in sorted(src.glob(f"{cls}/*.tif"))[:per_class]:
            (base / cls / f.name).symlink_to(f)
            names.append(f.name)
    (dst / "eurosat-train.txt").write_text("\n".join(n.replace(".tif", ".jpg") for n in names))
    return names


def test_torchgeo_eurosat_with_to_terrafm(torchgeo, eurosat, tmp_path):
    from torchgeo.datasets import EuroSAT
    from torchgeo.datasets.utils import stack_samples

    assert list(EuroSAT.all_band_names) == EUROSAT_ORDER  # the order the transform is told
    _torchgeo_eurosat_root(eurosat, tmp_path)
    ds = EuroSAT(tmp_path, split="train", transforms=ToTerraFM("s2_l1c", EuroSAT.all_band_names))
    assert len(ds) == 6
    s = ds[0]
    path = Path(ds.samples[0][0])
    with rasterio.open(path) as f:
        torch.testing.assert_close(
            s["image"], _reference(f.read().astype(np.float64)), rtol=1e-5, atol=1e-4
        )
    batch = stack_samples([ds[i] for i in range(4)])
    with torch.no_grad():
        emb = terrafm.create_model("terrafm_tiny").eval()(to_model_inputs(batch, "s2_l1c"))
    assert emb.shape == (4, 96) and torch.isfinite(emb).all()


def test_torchgeo_collates_our_samples(torchgeo, eurosat):
    from torchgeo.datasets.utils import stack_samples

    tg = TorchGeoSamples(load_task("eurosat", None, eurosat, image_size=32).dataset("val"))
    batch = stack_samples([tg[i] for i in range(2)])
    assert batch["image"].shape == (2, 12, 32, 32) and batch["label"].shape == (2,)
