"""Tiling a scene into model windows, and which window owns each output pixel (docs/design.md, "What users need").

Everything here is in units of 16-pixel patches, so window edges always fall on patch edges and the
embedding raster (one pixel per patch) has an exact transform. Windows of ``size`` patches start
every ``stride`` patches; the last one along each axis is moved back so it ends at the scene edge.
Where two windows overlap, the overlap is split in the middle: each output pixel is written by
exactly one window, the one in which it lies furthest from the border (the "central part").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Window", "WindowGrid", "axis_starts", "owned_ranges"]


def axis_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)`` (patches), the last flush with the end.

    Args:
        length: axis length in patches.
        size: window length in patches (clamped to ``length``).
        stride: step between windows in patches, ``1 <= stride <= size`` (clamped with the size).
    """
    if length <= 0 or size <= 0:
        raise ValueError(f"axis length {length} and window size {size} must be positive")
    if not 1 <= stride <= size:
        raise ValueError(f"stride {stride} must be between 1 and the window size {size}")
    size = min(size, length)
    stride = min(stride, size)
    last = length - size
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def owned_ranges(starts: list[int], size: int) -> list[tuple[int, int]]:
    """The half-open range each window owns: overlaps are split at their middle.

    Returns:
        ``(begin, end)`` per window; together they partition ``[0, starts[-1] + size)``.
    """
    bounds = [starts[0]]
    for a, b in zip(starts[:-1], starts[1:]):
        bounds.append((b + a + size) // 2)  # middle of the overlap [b, a + size)
    bounds.append(starts[-1] + size)
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class Window:
    """One model window.

    Attributes:
        index: position in the row-major window list (the id used by resume and the table).
        row, col: top-left corner in input pixels.
        height, width: size in input pixels (multiples of the patch size).
        own_row0, own_row1, own_col0, own_col1: the output pixels (patches) this window writes,
            half-open, in output-raster coordinates.
    """

    index: int
    row: int
    col: int
    height: int
    width: int
    own_row0: int
    own_row1: int
    own_col0: int
    own_col1: int

    @property
    def own_shape(self) -> tuple[int, int]:
        return self.own_row1 - self.own_row0, self.own_col1 - self.own_col0

    def own_slices(self, patch: int) -> tuple[slice, slice]:
        """Slices of the owned part inside this window's own patch grid."""
        r0, c0 = self.row // patch, self.col // patch
        return (
            slice(self.own_row0 - r0, self.own_row1 - r0),
            slice(self.own_col0 - c0, self.own_col1 - c0),
        )


@dataclass(frozen=True)
class WindowGrid:
    """Windows over a ``height`` x ``width`` scene.

    Args:
        height, width: scene size in input pixels (any size; the last partial patch row/column is
            padded with nodata).
        window: window side in input pixels, a multiple of ``patch``.
        stride: step in input pixels, a multiple of ``patch`` (``window - overlap``).
        patch: model patch size (16).
    """

    height: int
    width: int
    window: int
    stride: int
    patch: int = 16

    def __post_init__(self) -> None:
        p = self.patch
        for name, v in (("window", self.window), ("stride", self.stride)):
            if v <= 0 or v % p:
                raise ValueError(f"{name} must be a positive multiple of {p} pixels, got {v}")
        if self.stride > self.window:
            raise ValueError(
                f"stride {self.stride} is larger than the window {self.window}: pixels would be skipped"
            )
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"empty scene {self.height} x {self.width}")

    @property
    def out_shape(self) -> tuple[int, int]:
        """Embedding raster size: one pixel per (possibly partial) patch."""
        return math.ceil(self.height / self.patch), math.ceil(self.width / self.patch)

    @property
    def window_shape(self) -> tuple[int, int]:
        """Window size in input pixels; smaller than ``window`` only for a smaller scene."""
        gh, gw = self.out_shape
        wp = self.window // self.patch
        return min(wp, gh) * self.patch, min(wp, gw) * self.patch

    def windows(self) -> list[Window]:
        p = self.patch
        gh, gw = self.out_shape
        wh, ww = self.window_shape
        rs = axis_starts(gh, self.window // p, self.stride // p)
        cs = axis_starts(gw, self.window // p, self.stride // p)
        r_own = owned_ranges(rs, wh // p)
        c_own = owned_ranges(cs, ww // p)
        out = []
        for i, (r, (r0, r1)) in enumerate(zip(rs, r_own)):
            for j, (c, (c0, c1)) in enumerate(zip(cs, c_own)):
                out.append(Window(i * len(cs) + j, r * p, c * p, wh, ww, r0, r1, c0, c1))
        return out

    def __len__(self) -> int:
        return len(self.windows())
