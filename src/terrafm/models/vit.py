"""The TerraFM encoder: sensor stems + fusion, then a DINO-v1-style ViT (docs/design.md, "Encoder and checkpoint layout").

Inputs are always a dict from sensor key (``s1``, ``s2_l1c``, ``s2_l2a``) to a normalised tensor
(B, C, H, W) with H and W multiples of 16; the sensor is never inferred from a channel count. One
key takes the published single-sensor path; several keys are fused per patch (docs/design.md, "Fusion").

The model contract used by evaluation, embedding and export:
``forward`` (normed CLS, (B, D)), ``forward_features`` (dict), ``get_intermediate_layers`` (the
dinov2 signature) and ``get_last_selfattention``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from terrafm.errors import DataError
from terrafm.models.fast import FastPath
from terrafm.models.patch_embed import SensorStems
from terrafm.sensors import SENSOR_KEYS, get_sensor

__all__ = ["InputError", "TerraFM", "TerraFMConfig"]

Inputs = Mapping[str, torch.Tensor]
Masks = Mapping[str, torch.Tensor] | None


class InputError(DataError, ValueError):
    """Model input that does not fit the contract (unknown sensor, bad shape, size, channels)."""


@dataclass
class TerraFMConfig:
    """Architecture of a TerraFM encoder."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 224
    fusion_queries: int = 5
    fusion_heads: int = 16
    drop_path_rate: float = 0.0
    dense_layers: tuple[int, ...] = field(default=(3, 5, 7, 11))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["dense_layers"] = list(self.dense_layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TerraFMConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TerraFM config key(s) {unknown}")
        kw = dict(d)
        if "dense_layers" in kw:
            kw["dense_layers"] = tuple(kw["dense_layers"])  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]


class TerraFM(nn.Module):
    """TerraFM encoder.

    Args:
        cfg: architecture.
    """

    def __init__(self, cfg: TerraFMConfig | None = None):
        super().__init__()
        cfg = cfg or TerraFMConfig()
        self.cfg = cfg
        d = cfg.embed_dim
        self.embed_dim = d
        self.num_features = d
        self.patch_size = cfg.patch_size
        self.grid = cfg.img_size // cfg.patch_size
        self.patch_embed = SensorStems(d, cfg.patch_size, cfg.fusion_queries, cfg.fusion_heads)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, d))
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(
                d,
                cfg.num_heads,
                cfg.mlp_ratio,
                qkv_bias=True,
                drop_path=dpr[i],
                norm_layer=norm,  # type: ignore[arg-type]
            )
            for i in range(cfg.depth)
        )
        self.norm = norm(d)
        self._fast = FastPath()
        self.init_weights()

    # ------------------------------------------------------------------ init
    def init_weights(self) -> None:
        """DINO initialisation (docs/design.md, "Encoder and checkpoint layout"): trunc-normal 0.02 for linears and tokens, zero biases."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.patch_embed.projection.queries, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for key in SENSOR_KEYS:
            nn.init.zeros_(self.patch_embed.modality_embed(key))

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, inputs: Inputs, masks: Masks = None) -> tuple[int, int, int]:
        """Validate an input dict; returns (B, H, W) or raises :class:`InputError`."""
        if not isinstance(inputs, Mapping) or not inputs:
            raise InputError(
                "TerraFM input must be a non-empty dict {sensor: tensor (B, C, H, W)}, "
                f"with sensors from {list(SENSOR_KEYS)}; got {type(inputs).__name__}"
            )
        shape: tuple[int, int, int] | None = None
        for key, x in inputs.items():
            if key not in SENSOR_KEYS:
                raise InputError(f"unknown sensor {key!r}; expected one of {list(SENSOR_KEYS)}")
            n = get_sensor(key).num_bands
            if x.ndim != 4 or x.shape[1] != n:
                raise InputError(
                    f"sensor {key!r}: expected a tensor (B, {n}, H, W) with bands "
                    f"{list(get_sensor(key).band_names)}, got shape {tuple(x.shape)}"
                )
            b, _, h, w = x.shape
            if h % self.patch_size or w % self.patch_size or h == 0 or w == 0:
                raise InputError(
                    f"sensor {key!r}: height and width must be positive multiples of "
                    f"{self.patch_size}, got {h} x {w}"
                )
            if shape is not None and (b, h, w) != shape:
                raise InputError(
                    f"sensor {key!r}: shape {tuple(x.shape)} does not match the other sensors' "
                    f"batch and size {shape} (fused sensors must be co-registered)"
                )
            shape = (b, h, w)
        assert shape is not None
        if masks is not None:
            for key in inputs:
                if key not in masks:
                    raise InputError(f"masks given but none for sensor {key!r}")
                if tuple(masks[key].shape) != (shape[0],):
                    raise InputError(
                        f"mask of sensor {key!r} must have shape ({shape[0]},), got {tuple(masks[key].shape)}"
                    )
            extra = sorted(set(masks) - set(inputs))
            if extra:
                raise InputError(f"masks for sensors {extra} that are not in the input")
            present = torch.stack([masks[k].bool() for k in inputs], 1).any(1)
            if not bool(present.all()):
                empty = torch.nonzero(~present).flatten().tolist()
                raise InputError(f"sample(s) {empty} of the batch have no sensor present in masks")
        return shape

    # ------------------------------------------------------------------ tokens
    def interpolate_pos_encoding(self, gh: int, gw: int) -> torch.Tensor:
        """Position embedding for a gh x gw patch grid, as the published reference computes it.

        Bicubic resize of the stored 14 x 14 grid with ``scale_factor = ((gh + 0.1) / 14,
        (gw + 0.1) / 14)`` (DINO's +0.1 guards the floor of the output size); the stored table is
        returned untouched for a 14 x 14 grid.
        """
        if gh == self.grid and gw == self.grid:
            return self.pos_embed
        cls_pos = self.pos_embed[:, :1]
        patch_pos = self.pos_embed[:, 1:]
        d = patch_pos.shape[-1]
        g = self.grid
        patch_pos = F.interpolate(
            patch_pos.reshape(1, g, g, d).permute(0, 3, 1, 2),
            scale_factor=((gh + 0.1) / g, (gw + 0.1) / g),
            mode="bicubic",
        )
        assert patch_pos.shape[-2:] == (gh, gw)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, d)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def _fast_enabled(self) -> bool:
        return (not self.training) and torch.is_inference_mode_enabled()

    def prepare_tokens(self, inputs: Inputs, masks: Masks = None) -> tuple[torch.Tensor, int, int]:
        """Stems (+ fusion), CLS and position embedding: (B, 1 + N, D) and the grid size."""
        b, h, w = self.check_inputs(inputs, masks)
        gh, gw = h // self.patch_size, w // self.patch_size
        keys = list(inputs)
        single = len(keys) == 1 and (masks is None or bool(masks[keys[0]].all()))
        if single and self._fast_enabled():
            x = self._fast.stem(self.patch_embed, keys[0], inputs[keys[0]])
        else:
            x = self.patch_embed(inputs, masks)
        x = torch.cat((self.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        return x + self.interpolate_pos_encoding(gh, gw).to(x.dtype), gh, gw

    def _run_blocks(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of blocks ``0..upto`` (default: all), via the fast path when it applies."""
        blocks = self.blocks if upto is None else self.blocks[: upto + 1]
        if self._fast_enabled():
            return self._fast.blocks(blocks, self.cfg.num_heads, x)
        outs = []
        for blk in blocks:
            x = blk(x)
            outs.append(x)
        return outs

    # ------------------------------------------------------------------ contract
    def forward_features(self, inputs: Inputs, masks: Masks = None) -> dict[str, torch.Tensor]:
        """Run the encoder.

        Returns:
            ``x_norm_clstoken`` (B, D), ``x_norm_patchtokens`` (B, N, D), ``x_prenorm``
            (B, 1 + N, D) and ``grid`` (a (2,) long tensor with the patch grid height and width).
        """
        x, gh, gw = self.prepare_tokens(inputs, masks)
        x = self._run_blocks(x)[-1]
        xn = self.norm(x)
        return {
            "x_norm_clstoken": xn[:, 0],
            "x_norm_patchtokens": xn[:, 1:],
            "x_prenorm": x,
            "grid": torch.tensor([gh, gw]),
        }

    def forward(self, inputs: Inputs, masks: Masks = None) -> torch.Tensor:
        """Normed CLS embedding (B, D)."""
        return self.forward_features(inputs, masks)["x_norm_clstoken"]

    def _block_indices(self, n: int | Sequence[int]) -> list[int]:
        depth = len(self.blocks)
        if isinstance(n, int):
            if not 1 <= n <= depth:
                raise ValueError(f"n={n}: ask for 1..{depth} last blocks")
            return list(range(depth - n, depth))
        idx = [int(i) for i in n]
        bad = [i for i in idx if not -depth <= i < depth]
        if bad:
            raise ValueError(f"block indices {bad} out of range for depth {depth}")
        return [i % depth for i in idx]

    def get_intermediate_layers(
        self,
        inputs: Inputs,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
        masks: Masks = None,
    ) -> tuple:
        """Outputs of intermediate blocks (dinov2 semantics).

        Args:
            inputs: sensor dict.
            n: an int = the last ``n`` blocks; a sequence = those block indices.
            reshape: return patch tokens as maps (B, D, H/16, W/16) instead of (B, N, D).
            return_class_token: return ``(patch_tokens, cls_token)`` pairs.
            norm: apply the final LayerNorm to each output.
            masks: optional per-sample sensor masks.
        """
        wanted = self._block_indices(n)
        x, gh, gw = self.prepare_tokens(inputs, masks)
        block_outs = self._run_blocks(x, upto=max(wanted))
        result = []
        for i in wanted:
            o = self.norm(block_outs[i]) if norm else block_outs[i]
            cls, patches = o[:, 0], o[:, 1:]
            if reshape:
                patches = patches.reshape(o.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()
            result.append((patches, cls) if return_class_token else patches)
        return tuple(result)

    @torch.no_grad()
    def get_last_selfattention(self, inputs: Inputs, masks: Masks = None) -> torch.Tensor:
        """Attention probabilities of the last block, (B, heads, 1 + N, 1 + N)."""
        x, _, _ = self.prepare_tokens(inputs, masks)
        for blk in self.blocks[:-1]:
            x = blk(x)
        last = self.blocks[-1]
        assert isinstance(last, Block)
        qkv_layer: nn.Module = last.attn.qkv  # type: ignore[assignment]
        heads = self.cfg.num_heads
        b, n, d = x.shape
        qkv = qkv_layer(last.norm1(x)).reshape(b, n, 3, heads, d // heads)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def dense_layers(self) -> tuple[int, ...]:
        return self.cfg.dense_layers

    def grid_size(self, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size, w // self.patch_size

    def flops_per_image(self, h: int = 224, w: int = 224, sensor: str = "s2_l2a") -> float:
        """Multiply-accumulate count x 2 of one single-sensor forward (matmuls only)."""
        d, a = self.embed_dim, self.patch_embed.attn_dim
        n = (h // self.patch_size) * (w // self.patch_size)
        c = get_sensor(sensor).num_bands * self.patch_size**2
        stem = n * (c * a + 2 * a * a + a * d)
        t = n + 1
        hidden = int(d * self.cfg.mlp_ratio)
        block = t * (4 * d * d + 2 * d * hidden) + 2 * t * t * d
        return 2.0 * (stem + len(self.blocks) * block)
