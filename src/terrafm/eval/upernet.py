"""UPerNet on four ViT block outputs, with a feature pyramid and an auxiliary FCN head (docs/design.md, "Evaluation protocols / Copernicus-Bench").

Written here from the published description (Xiao et al., "Unified Perceptual Parsing", 2018, and
the Copernicus-Bench segmentation protocol):

1. :class:`FeaturePyramid` rescales the four (B, D, h, w) block outputs by x4, x2, x1 and x0.5
   (two stride-2 transposed convolutions with BatchNorm + GELU between; one; identity; 2x2 max-pool).
2. :class:`UPerHead`: a pyramid pooling module (average pools to 1, 2, 3 and 6 cells) on the
   coarsest level, lateral 1x1 convolutions, a top-down path, 3x3 FPN convolutions, and a fusion of
   all levels at the finest resolution into class logits (512 channels by default).
3. :class:`FCNHead` on the third level gives auxiliary logits, weighted 0.4 in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FCNHead", "FeaturePyramid", "UPerHead", "UPerNet"]

SCALES = (4.0, 2.0, 1.0, 0.5)
POOL_SCALES = (1, 2, 3, 6)


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias), BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class FeaturePyramid(nn.Module):
    """Four same-resolution ViT maps -> four maps at x4, x2, x1, x0.5 resolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
            nn.BatchNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.down2 = nn.MaxPool2d(2)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != 4:
            raise ValueError(f"the feature pyramid takes 4 block outputs, got {len(feats)}")
        a, b, c, d = feats  # each (B, D, h, w)
        return [self.up4(a), self.up2(b), c, self.down2(d)]


class PyramidPooling(nn.Module):
    """Average-pool to each scale, 1x1 conv, upsample back, concatenate with the input."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int] = POOL_SCALES):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(cin, channels, 1)) for s in scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C + S*ch, h, w)
        return torch.cat([x] + [_up(stage(x), x.shape[-2:]) for stage in self.stages], 1)


class UPerHead(nn.Module):
    """UPerNet decode head over a 4-level pyramid (finest first)."""

    def __init__(
        self, in_channels: Sequence[int], channels: int, num_classes: int, dropout: float = 0.1
    ):
        super().__init__()
        *fine, coarse = in_channels
        self.ppm = PyramidPooling(coarse, channels)
        self.bottleneck = ConvBNReLU(coarse + len(POOL_SCALES) * channels, channels, 3)
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in fine)
        self.fpn = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in fine)
        self.fuse = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats[:-1])]
        laterals.append(self.bottleneck(self.ppm(feats[-1])))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([outs[0]] + [_up(o, size) for o in outs[1:]], 1))
        return self.classifier(self.dropout(fused))  # (B, K, H0, W0)


class FCNHead(nn.Module):
    """Auxiliary head: 3x3 conv block, dropout, 1x1 classifier."""

    def __init__(self, cin: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNReLU(cin, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class UPerNet(nn.Module):
    """Feature pyramid + UPerNet head + auxiliary FCN head on four ViT block outputs.

    Args:
        dim: the encoder's embedding dimension.
        num_classes: output classes.
        channels: UPerNet channels (512 in the protocol).
        aux_channels: FCN head channels.
        aux_index: pyramid level the auxiliary head reads.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        channels: int = 512,
        aux_channels: int = 256,
        aux_index: int = 2,
    ):
        super().__init__()
        self.neck = FeaturePyramid(dim)
        self.decode = UPerHead([dim] * 4, channels, num_classes)
        self.aux = FCNHead(dim, aux_channels, num_classes)
        self.aux_index = aux_index

    def forward(
        self, feats: Sequence[torch.Tensor], size: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block outputs (B, D, h, w) x 4 -> main and auxiliary logits (B, K, *size)."""
        pyramid = self.neck(feats)
        return _up(self.decode(pyramid), size), _up(self.aux(pyramid[self.aux_index]), size)
