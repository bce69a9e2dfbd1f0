"""Embedding real scenes (serving export of the encoder is :mod:`terrafm.serving`).

What users asked for here: docs/design.md, "What users need", items 4 and 6.

- :func:`embed_scene` / :func:`embed_scenes`: scene rasters -> patch-embedding GeoTIFF, per-window
  GeoParquet table and PCA preview; streamed, resumable, sharded across ranks.
"""

from terrafm.embed.pipeline import (
    EmbedError,
    EmbedInterrupted,
    EmbedOptions,
    EmbedReport,
    embed_scene,
)
from terrafm.embed.progress import ProgressError
from terrafm.embed.windows import Window, WindowGrid
from terrafm.io.scene import Scene, SourceError, SourceSpec, open_scene

__all__ = [
    "EmbedError",
    "EmbedInterrupted",
    "EmbedOptions",
    "EmbedReport",
    "ProgressError",
    "Scene",
    "SourceError",
    "SourceSpec",
    "Window",
    "WindowGrid",
    "embed_scene",
    "open_scene",
]
