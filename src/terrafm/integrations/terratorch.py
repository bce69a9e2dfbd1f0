"""TerraFM as a terratorch backbone (dense outputs: docs/design.md, "Encoder and checkpoint layout").

terratorch builds task models from a backbone registry: a backbone is an ``nn.Module`` with an
``out_channels`` list whose ``forward(x)`` returns one feature tensor per level; necks
(``ReshapeTokensToImage``, ``LearnedInterpolateToPyramidal`` ...) and decoders (``UperNetDecoder``)
consume that list. :class:`TerraFMBackbone` returns the normed outputs of the variant's dense blocks
(B: 3, 5, 7, 11; L: 7, 11, 15, 23) as

- ``output="tokens"`` (default, terratorch's ViT convention): ``(B, 1 + N, D)``, CLS first;
- ``output="maps"``: ``(B, D, H/16, W/16)``, for which ``ReshapeTokensToImage`` is a no-op.

Prefer ``maps`` for non-square inputs: ``ReshapeTokensToImage`` guesses the grid from the token
count and a non-square grid with a square count (4 x 16 = 8 x 8 tokens) would be folded wrongly.

Inputs are normalised (:func:`terrafm.normalize`, or the means/stds of :func:`datamodule_stats`):
a tensor ``(B, C, H, W)`` of the configured ``sensor``, or a dict of them keyed by sensor (terrafm
keys, or terratorch/TerraMind modality names ``S2L2A``, ``S2L1C``, ``S1RTC``, ``S1GRD``). Channels
are matched by name when ``bands`` is given, so a dataset's own band order works unchanged.

Register with :func:`register` (idempotent); nothing registers at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from terrafm.models.vit import InputError, TerraFM
from terrafm.models.zoo import create_model, list_models
from terrafm.sensors import SENSOR_KEYS, BandError, band_indices, get_sensor

__all__ = [
    "MODALITY_ALIASES",
    "TerraFMBackbone",
    "build_backbone",
    "datamodule_stats",
    "register",
]

# terratorch / TerraMind modality names -> terrafm sensor keys.
MODALITY_ALIASES = {
    "s2l2a": "s2_l2a",
    "s2_l2a": "s2_l2a",
    "s2l1c": "s2_l1c",
    "s2_l1c": "s2_l1c",
    "s1": "s1",
    "s1rtc": "s1",
    "s1grd": "s1",
}
OUTPUTS = ("tokens", "maps")


def _sensor_key(name: str) -> str:
    key = MODALITY_ALIASES.get(name.lower().replace("-", "_"))
    if key is None:
        raise InputError(
            f"unknown modality {name!r}; use a terrafm sensor key {list(SENSOR_KEYS)} or one of "
            f"{sorted(k for k in MODALITY_ALIASES if '_' not in k)}"
        )
    return key


class TerraFMBackbone(nn.Module):
    """A TerraFM encoder returning multi-level features for terratorch necks and decoders.

    Args:
        encoder: the TerraFM model (weights already loaded).
        sensor: sensor of a plain tensor input.
        bands: channel names of the input, in its order: a list (for ``sensor``) or a dict per
            sensor; ``None`` = the sensor's stem order (:attr:`terrafm.Sensor.band_names`).
        out_indices: blocks to return (default: the variant's ``dense_layers``).
        output: ``"tokens"`` (B, 1 + N, D) with CLS first, or ``"maps"`` (B, D, H/16, W/16).

    Attributes:
        out_channels: the width of each returned level (what terratorch reads).
    """

    def __init__(
        self,
        encoder: TerraFM,
        *,
        sensor: str = "s2_l2a",
        bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        out_indices: Sequence[int] | None = None,
        output: str = "tokens",
    ):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.encoder = encoder
        self.sensor = _sensor_key(sensor)
        self.output = output
        depth = encoder.cfg.depth
        idx = [int(i) for i in (out_indices if out_indices is not None else encoder.dense_layers)]
        bad = [i for i in idx if not -depth <= i < depth]
        if not idx or bad:
            raise ValueError(f"out_indices {idx} invalid for a {depth}-block encoder")
        self.out_indices = [i % depth for i in idx]
        self.out_channels = [encoder.embed_dim] * len(self.out_indices)
        self.patch_size = encoder.patch_size  # terratorch pads inputs to a multiple of this
        per_sensor = bands if isinstance(bands, Mapping) else {self.sensor: bands}
        self.bands: dict[str, list[str]] = {}
        self._index: dict[str, list[int] | None] = {}
        for name, names in per_sensor.items():
            key = _sensor_key(name)
            if names is None:
                continue
            idx_s = band_indices(key, list(names))  # BandError names what is missing
            self.bands[key] = list(names)
            self._index[key] = None if idx_s == list(range(len(names))) else idx_s

    def _select(self, key: str, x: torch.Tensor) -> torch.Tensor:
        names = self.bands.get(key)
        if names is None:
            return x
        if x.ndim != 4 or x.shape[1] != len(names):
            raise BandError(
                f"sensor {key!r}: input has shape {tuple(x.shape)}, expected (B, {len(names)}, H, W) "
                f"for the declared bands {names}"
            )
        idx = self._index[key]
        return x if idx is None else x[:, idx]  # (B, C_stem, H, W)

    def encoder_inputs(
        self, x: torch.Tensor | Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The TerraFM input dict for a tensor or modality dict (bands mapped by name)."""
        if isinstance(x, torch.Tensor):
            return {self.sensor: self._select(self.sensor, x)}
        if not isinstance(x, Mapping) or not x:
            raise InputError(
                f"expected a tensor or a non-empty dict of tensors, got {type(x).__name__}"
            )
        out: dict[str, torch.Tensor] = {}
        for name, t in x.items():
            key = _sensor_key(name)
            if key in out:
                raise InputError(f"modality {name!r} maps to sensor {key!r}, given twice")
            out[key] = self._select(key, t)
        return out

    def forward(
        self,
        x: torch.Tensor | Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        """Features of the ``out_indices`` blocks.

        Args:
            x: normalised input, (B, C, H, W) or a modality dict; H, W multiples of 16.
            masks: optional per-sample sensor presence, ``{sensor: (B,) bool}``.
            kwargs: other batch fields terratorch tasks pass along; ignored.
        """
        inputs = self.encoder_inputs(x)
        if masks is not None:
            masks = {_sensor_key(k): v for k, v in masks.items()}
        outs = self.encoder.get_intermediate_layers(
            inputs,
            n=self.out_indices,
            reshape=self.output == "maps",
            return_class_token=True,
            masks=masks,
        )
        if self.output == "maps":
            return [patches for patches, _ in outs]  # (B, D, h, w) each
        return [torch.cat([cls[:, None], patches], 1) for patches, cls in outs]  # (B, 1+N, D)


def datamodule_stats(
    sensor: str = "s2_l2a", bands: Sequence[str] | None = None
) -> tuple[list[float], list[float]]:
    """``(means, stds)`` in the order of ``bands`` (the dataset's), for terratorch datamodules.

    The values are the encoder's statistics in its input unit (S2 DN, S1 dB: docs/design.md,
    "Sensors and units"); bands the
    sensor drops (L1C B10) get mean 0 / std 1, since the backbone discards them anyway.
    """
    s = get_sensor(_sensor_key(sensor))
    names = list(bands) if bands is not None else list(s.band_names)
    idx = band_indices(s.key, names)
    means, stds = [0.0] * len(names), [1.0] * len(names)
    for stem_pos, pos in enumerate(idx):
        means[pos], stds[pos] = s.stats.mean[stem_pos], s.stats.std[stem_pos]
    return means, stds


def build_backbone(
    model: str,
    pretrained: bool | str | Path = False,
    *,
    ckpt_path: str | Path | None = None,
    weights: str | None = None,
    sha256: str | None = None,
    allow_unverified: bool = False,
    cache_dir: str | Path | None = None,
    sensor: str = "s2_l2a",
    bands: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    out_indices: Sequence[int] | None = None,
    output: str = "tokens",
    **overrides: Any,
) -> TerraFMBackbone:
    """Build a :class:`TerraFMBackbone` with terratorch's usual arguments.

    Args:
        model: TerraFM variant.
        pretrained: ``True`` = the variant's default registry weights; a path or registry name
            also works. ``False`` = random init.
        ckpt_path: a local ``.pth`` / ``.safetensors`` (terratorch's name for it).
        weights: a :mod:`terrafm.weights` registry name.
        sha256: expected digest of registry weights whose entry records none.
        allow_unverified: accept registry weights with an unknown hash.
        cache_dir: download cache.
        sensor, bands, out_indices, output: see :class:`TerraFMBackbone`.
        overrides: TerraFM config fields (``drop_path_rate`` ...).
    """
    chosen = [p for p in (ckpt_path, weights, pretrained if pretrained is not False else None) if p]
    if len(chosen) > 1:
        raise ValueError("give one of ckpt_path=, weights= and pretrained=")
    encoder = create_model(
        model,
        chosen[0] if chosen else None,
        sha256=sha256,
        allow_unverified=allow_unverified,
        cache_dir=cache_dir,
        **overrides,
    )
    return TerraFMBackbone(
        encoder, sensor=sensor, bands=bands, out_indices=out_indices, output=output
    )


def _constructor(model: str) -> Callable[..., TerraFMBackbone]:
    def construct(pretrained: bool | str | Path = False, **kwargs: Any) -> TerraFMBackbone:
        return build_backbone(model, pretrained, **kwargs)

    construct.__name__ = construct.__qualname__ = model
    construct.__doc__ = f"{model} as a terratorch backbone; arguments as terrafm's build_backbone."
    return construct


def register(registry: Any = None) -> list[str]:
    """Add ``terrafm_tiny/small/base/large`` to terratorch's backbone registry (idempotent).

    Args:
        registry: a terratorch ``Registry``; default ``TERRATORCH_BACKBONE_REGISTRY`` (imports
            terratorch: install the ``terratorch`` extra).

    Returns:
        The names now registered.
    """
    if registry is None:
        from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY

        registry = TERRATORCH_BACKBONE_REGISTRY
    names = list_models()
    for name in names:
        if name not in registry:
            registry.register(_constructor(name))
    return names
