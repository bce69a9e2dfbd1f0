"""Adapters to other libraries, each behind an optional extra (``pip install terrafm[terratorch]``).

- :mod:`terrafm.integrations.terratorch`: a terratorch backbone (multi-level features with
  ``out_channels``) and its registration in terratorch's backbone registry.
- :mod:`terrafm.integrations.torchgeo`: torchgeo-style sample dicts from terrafm datasets, a
  transform from torchgeo samples to TerraFM inputs, and torchgeo-style weights enums / ``get_model``.

The adapter classes are plain PyTorch; only the functions that touch the other library import it.
"""
