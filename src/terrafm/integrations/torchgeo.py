"""torchgeo interoperability: sample dicts both ways, weights enums, ``get_model``.

- :class:`TorchGeoSamples` wraps a terrafm dataset (items ``{"inputs": {sensor: T}, "label" |
  "mask", "id"}``, e.g. :meth:`terrafm.eval.tasks.EvalTask.dataset`) and yields torchgeo-style
  samples: ``{"image": T, "label": ...}`` for one sensor, ``{"image_s1": T, "image_s2_l2a": T, ...}``
  for several (torchgeo's BigEarthNet convention), ``"mask"`` for segmentation.
- :class:`ToTerraFM` is a torchgeo transform for the other direction: a raw torchgeo image (e.g.
  ``torchgeo.datasets.EuroSAT``, 13 L1C bands with B8A last) becomes the normalised stem input,
  bands matched by name (docs/design.md, "Sensors and units"), statistics from a registry entry.
- :class:`TerraFMBase16_Weights` / :class:`TerraFMLarge16_Weights` are torchvision/torchgeo
  ``WeightsEnum`` classes over the registry entries; :func:`get_model`, :func:`get_weight`,
  :func:`get_model_weights` and :func:`list_models` mirror ``torchgeo.models``. Loading goes
  through :mod:`terrafm.weights` (``fetch_weights``, ``create_model``'s ``pretrained`` door), so
  the sha256 rules hold here too.

Only torchvision (a core dependency) is needed; torchgeo itself is optional.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.models._api import Weights as TVWeights
from torchvision.models._api import WeightsEnum

from terrafm.models.vit import InputError, TerraFM
from terrafm.models.zoo import create_model
from terrafm.sensors import SENSOR_KEYS
from terrafm.weights.checkpoint import CheckpointError, read_state_dict
from terrafm.weights.pretrained import FETCH_OPTIONS, split_fetch_options
from terrafm.weights.registry import Weights, fetch_weights, get_weights

__all__ = [
    "TerraFMBase16_Weights",
    "TerraFMLarge16_Weights",
    "ToTerraFM",
    "TorchGeoSamples",
    "collate",
    "get_model",
    "get_model_weights",
    "get_weight",
    "list_models",
    "to_model_inputs",
    "to_torchgeo_sample",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- terrafm -> torchgeo samples
def to_torchgeo_sample(item: Mapping[str, Any]) -> dict[str, Any]:
    """One terrafm item as a torchgeo sample (error items pass through unchanged)."""
    if "error" in item:
        return dict(item)
    inputs = item["inputs"]
    if len(inputs) == 1:
        sample: dict[str, Any] = {"image": next(iter(inputs.values()))}
    else:
        sample = {f"image_{k}": v for k, v in inputs.items()}
    for key in ("label", "mask", "id"):
        if key in item:
            sample[key] = item[key]
    return sample


class TorchGeoSamples(Dataset):
    """A terrafm dataset seen as a torchgeo ``NonGeoDataset`` (same items, torchgeo keys).

    Args:
        dataset: items ``{"inputs": {sensor: (C, H, W)}, "label"/"mask", "id"}``; images are
            already normalised by it (choose with ``EvalTask.dataset(normalization=...)``).
        transforms: applied to each torchgeo sample, as in torchgeo datasets.

    Items a dataset built with ``on_error="skip"`` could not read stay ``{"error", "id"}``;
    :func:`collate` drops and counts them.
    """

    def __init__(self, dataset: Any, transforms: Any = None):
        self.dataset = dataset
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = to_torchgeo_sample(self.dataset[index])
        if self.transforms is not None and "error" not in sample:
            sample = self.transforms(sample)
        return sample


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack torchgeo samples into a batch (tensors stacked, others listed), dropping error items.

    The batch's ``"skipped"`` holds the messages of dropped items (empty list when none).
    """
    good = [s for s in samples if "error" not in s]
    skipped = [str(s["error"]) for s in samples if "error" in s]
    for msg in skipped:
        log.warning("skipped sample: %s", msg)
    batch: dict[str, Any] = {"skipped": skipped}
    if not good:
        return batch
    for key in good[0]:
        values = [s[key] for s in good]
        batch[key] = (
            torch.stack(values) if isinstance(values[0], torch.Tensor) else values  # (B, ...)
        )
    return batch


def to_model_inputs(batch: Mapping[str, Any], sensor: str | None = None) -> dict[str, torch.Tensor]:
    """The TerraFM input dict of a torchgeo batch: ``image`` (needs ``sensor``) or ``image_<key>``."""
    if "image" in batch:
        if sensor is None:
            raise InputError("a batch with a plain 'image' needs sensor= (s1, s2_l1c or s2_l2a)")
        return {sensor: batch["image"]}
    inputs = {k[len("image_") :]: v for k, v in batch.items() if k.startswith("image_")}
    unknown = sorted(set(inputs) - set(SENSOR_KEYS))
    if not inputs or unknown:
        raise InputError(
            f"batch keys {sorted(batch)}: expected 'image' or 'image_<sensor>' with sensors "
            f"from {list(SENSOR_KEYS)}"
        )
    return inputs


# ----------------------------------------------------------------- torchgeo -> terrafm input
class ToTerraFM(nn.Module):
    """torchgeo transform: raw image in the dataset's band order -> normalised TerraFM stem input.

    Args:
        sensor: ``s1``, ``s2_l1c`` or ``s2_l2a`` (what the data *is*: EuroSAT-MS is L1C).
        bands: the dataset's channel names in order (``dataset.bands``); extra bands the sensor
            drops (L1C B10) are removed, missing ones are an error.
        weights: registry entry (or name) whose statistics to use; default the sensor's own.
        key: sample key holding the image.
        s1_unit: ``"dB"`` or ``"linear"`` for S1 input.
        boa_offset: subtract the L2A +1000 DN offset first (products processed after 2022-01-25).
        scale: multiply the raw values first (1e4 for reflectance in [0, 1]).
    """

    def __init__(
        self,
        sensor: str,
        bands: Sequence[str],
        *,
        weights: str | Weights | None = None,
        key: str = "image",
        s1_unit: str = "dB",
        boa_offset: bool = False,
        scale: float = 1.0,
    ):
        super().__init__()
        from terrafm.sensors import band_indices, get_sensor

        band_indices(sensor, list(bands))  # fail now, naming the missing/unknown bands
        self.sensor = sensor
        self.bands = list(bands)
        self.key = key
        self.s1_unit = s1_unit
        self.boa_offset = boa_offset
        self.scale = float(scale)
        self.stats = get_weights(weights).stats[sensor] if weights else get_sensor(sensor).stats

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        from terrafm.sensors import normalize

        out = dict(sample)
        x = out[self.key].float()
        if self.scale != 1.0:
            x = x * self.scale
        out[self.key] = normalize(
            x,
            self.sensor,
            self.bands,
            stats=self.stats,
            s1_unit=self.s1_unit,
            boa_offset=self.boa_offset,
        )  # (C_stem, H, W) or (B, C_stem, H, W)
        return out


# ----------------------------------------------------------------- weights enums, get_model
def _tv_weights(name: str) -> TVWeights:
    w = get_weights(name)
    return TVWeights(
        url=w.resolved_url(),
        transforms=partial(ToTerraFM, weights=name),
        meta={**w.meta, "registry_name": w.name, "dataset": "Major-TOM Core"},
    )


class _RegistryWeightsEnum(WeightsEnum):
    """``get_state_dict`` through the terrafm registry (sha256 rules), not a bare URL download."""

    def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The weights as a state dict; keywords as :func:`terrafm.weights.fetch_weights`."""
        kwargs.pop("progress", None)  # torchvision's signature; downloads log instead
        if args:
            raise TypeError("get_state_dict takes keyword arguments only")
        path = fetch_weights(self.value.meta["registry_name"], **kwargs)
        return read_state_dict(path)


class TerraFMBase16_Weights(_RegistryWeightsEnum):
    """TerraFM-B weights (``terrafm_base``)."""

    MAJOR_TOM = _tv_weights("terrafm_base.published")


class TerraFMLarge16_Weights(_RegistryWeightsEnum):
    """TerraFM-L weights (``terrafm_large``)."""

    MAJOR_TOM = _tv_weights("terrafm_large.published")


_MODEL_WEIGHTS: dict[str, type[WeightsEnum]] = {
    "terrafm_base": TerraFMBase16_Weights,
    "terrafm_large": TerraFMLarge16_Weights,
}


def list_models() -> list[str]:
    """Model names :func:`get_model` builds."""
    from terrafm.models.zoo import list_models as _list

    return _list()


def get_model_weights(name: str) -> type[WeightsEnum]:
    """The weights enum of a model (torchgeo's ``get_model_weights``)."""
    if name not in _MODEL_WEIGHTS:
        raise CheckpointError(
            f"no weights enum for {name!r}; models with weights: {sorted(_MODEL_WEIGHTS)}"
        )
    return _MODEL_WEIGHTS[name]


def get_weight(name: str) -> WeightsEnum:
    """A weights enum member from its full name, e.g. ``"TerraFMBase16_Weights.MAJOR_TOM"``."""
    for enum in _MODEL_WEIGHTS.values():
        prefix = enum.__name__ + "."
        if name.startswith(prefix) and name[len(prefix) :] in enum.__members__:
            return enum[name[len(prefix) :]]
    raise CheckpointError(
        f"unknown weights {name!r}; known: "
        f"{[f'{e.__name__}.{m}' for e in _MODEL_WEIGHTS.values() for m in e.__members__]}"
    )


def get_model(
    name: str,
    weights: WeightsEnum | Weights | str | Path | None = None,
    **fetch_options: Any,
) -> TerraFM:
    """A TerraFM encoder, torchgeo style (``get_model("terrafm_base", TerraFMBase16_Weights.MAJOR_TOM)``).

    Args:
        name: model variant.
        weights: a weights enum member or its full name, a registry entry/name, or a file.
        fetch_options: ``sha256``, ``allow_unverified``, ``cache_dir``, ``revision``, ``fetcher``.
    """
    fetch, unknown = split_fetch_options(fetch_options)
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; fetch options: {list(FETCH_OPTIONS)}"
        )
    if isinstance(weights, str) and weights.split(".")[0] in {
        e.__name__ for e in _MODEL_WEIGHTS.values()
    }:
        weights = get_weight(weights)
    target: Weights | str | Path | None
    if isinstance(weights, WeightsEnum):
        target = get_weights(weights.value.meta["registry_name"])
    else:
        target = weights
    return create_model(name, target, **fetch)
