"""Reference "encoders" without learned weights, for reading a frozen-encoder result.

:class:`PixelEncoder` hands the normalised input itself to the protocols, through the same
``forward_features`` interface as :class:`terrafm.models.TerraFM`:

- each patch token is the patch's pixels of every sensor, flattened (``sum C x p x p`` values, in
  sensor-name order, then channel, row, column), so the segmentation probe becomes a linear map
  from the raw ``p x p`` patch to its ``p x p`` class logits;
- the "CLS token" is the per-channel mean and standard deviation over the image
  (``2 x sum C`` values), the classic hand-crafted scene descriptor.

What a linear read-out of the raw pixels reaches is the ceiling a random-init encoder approaches
(at initialisation a ViT is close to a random projection of its patches) and the bar a pretrained
encoder has to clear with fewer dimensions (``benchmarks/quickstart_probe.py pixels``).
:func:`patch_majority` paints each patch of a mask with its majority class: the segmentation an
encoder whose tokens knew exactly the dominant class of their patch would give at best
(``benchmarks/quickstart_probe.py --oracle``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from terrafm.eval.features import _tiles

__all__ = ["PixelEncoder", "patch_majority"]


class PixelEncoder(nn.Module):
    """The normalised input as patch tokens and band statistics as the CLS token.

    Args:
        patch_size: side of a patch token in pixels (16, as TerraFM).
    """

    def __init__(self, patch_size: int = 16):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_size = patch_size

    def forward_features(
        self, inputs: Mapping[str, torch.Tensor], masks: object = None
    ) -> dict[str, torch.Tensor]:
        """``{sensor: (B, C, H, W)}`` -> ``x_norm_clstoken`` (B, 2 sum C), ``x_norm_patchtokens``
        (B, N, sum C p^2) with N = (H / p) (W / p)."""
        if not inputs:
            raise ValueError("PixelEncoder needs at least one sensor input")
        p = self.patch_size
        sensors = sorted(inputs)
        shapes = {s: tuple(inputs[s].shape) for s in sensors}
        first = shapes[sensors[0]]
        if any(
            len(shp) != 4 or shp[0] != first[0] or shp[2:] != first[2:] for shp in shapes.values()
        ):
            raise ValueError(f"PixelEncoder: input shapes differ or are not (B, C, H, W): {shapes}")
        b, _, h, w = first
        if h % p or w % p:
            raise ValueError(f"PixelEncoder: image {h} x {w} is not a multiple of the patch {p}")
        x = torch.cat([inputs[s].float() for s in sensors], 1)  # (B, C, H, W)
        c = x.shape[1]
        tokens = _tiles(x, p).reshape(b, (h // p) * (w // p), c * p * p)  # row-major patches
        flat = x.reshape(b, c, h * w)
        cls = torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], 1)  # (B, 2C)
        return {"x_norm_clstoken": cls, "x_norm_patchtokens": tokens}

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The "CLS token" (B, 2 sum C)."""
        return self.forward_features(inputs)["x_norm_clstoken"]


def patch_majority(
    masks: torch.Tensor, num_classes: int, ignore_index: int = 255, patch: int = 16
) -> torch.Tensor:
    """Each ``patch`` x ``patch`` block of ``masks`` (B, H, W) painted with its most frequent class.

    ``ignore_index`` pixels do not vote; a block with no valid pixel gets class 0 (its pixels are
    ignored when scored). Ties go to the lower class index.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got {tuple(masks.shape)}")
    b, h, w = masks.shape
    if h % patch or w % patch:
        raise ValueError(f"masks {h} x {w} are not a multiple of the patch {patch}")
    blocks = _tiles(masks.long()[:, None], patch).reshape(-1, patch * patch)  # row-major
    valid = blocks != ignore_index
    if bool(((blocks < 0) | (blocks >= num_classes))[valid].any()):
        raise ValueError(f"masks hold labels outside 0..{num_classes - 1} and {ignore_index}")
    counts = torch.zeros(len(blocks), num_classes + 1, dtype=torch.long)
    counts.scatter_add_(1, torch.where(valid, blocks, num_classes), torch.ones_like(blocks))
    major = counts[:, :num_classes].argmax(1).reshape(b, h // patch, w // patch)
    return major.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
