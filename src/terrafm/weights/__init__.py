"""Everything about encoder weights, in one place (docs/design.md, "Weights").

- :mod:`~terrafm.weights.checkpoint`: the file formats (published ``.pth``, self-describing
  ``.safetensors``), reading, writing and loading into a model with a :class:`LoadReport`;
- :mod:`~terrafm.weights.registry`: named, self-describing entries (:class:`Weights`) and the
  built-in published TerraFM-B / TerraFM-L;
- :mod:`~terrafm.weights.fetch`: the download cache and sha256 checks;
- :mod:`~terrafm.weights.pretrained`: the one door from a ``pretrained=`` argument to loaded
  weights, used by :func:`terrafm.create_model`, ``torch.hub`` and the terratorch / torchgeo
  adapters;
- :mod:`~terrafm.weights.export`: a trained backbone written as a release (published ``.pth`` +
  ``.safetensors``);
- :mod:`~terrafm.weights.fingerprint`: one digest identifying what a model computes.

This package sits below :mod:`terrafm.models`: it never imports the model classes (a model is
anything with a state dict and a ``cfg``), so the models can use it without an import circle.
"""

from terrafm.weights.checkpoint import (
    FUSION_KEYS,
    CheckpointError,
    LoadReport,
    load_weights,
    published_state_dict,
    read_metadata,
    read_state_dict,
    save_published,
    save_weights,
)
from terrafm.weights.export import backbone_state, load_backbone, write_release
from terrafm.weights.fetch import (
    HashMismatchError,
    UnverifiedWeightsError,
    default_cache_dir,
    fetch_file,
    sha256_file,
    verify_file,
)
from terrafm.weights.fingerprint import model_fingerprint
from terrafm.weights.pretrained import (
    FETCH_OPTIONS,
    load_pretrained,
    resolve_pretrained,
    split_fetch_options,
)
from terrafm.weights.registry import (
    RegistryError,
    TerraFMWeights,
    Weights,
    default_weights,
    fetch_weights,
    get_weights,
    list_weights,
    register_checkpoint,
    register_weights,
    unregister_weights,
)

__all__ = [
    "FETCH_OPTIONS",
    "FUSION_KEYS",
    "CheckpointError",
    "HashMismatchError",
    "LoadReport",
    "RegistryError",
    "TerraFMWeights",
    "UnverifiedWeightsError",
    "Weights",
    "backbone_state",
    "default_cache_dir",
    "default_weights",
    "fetch_file",
    "fetch_weights",
    "get_weights",
    "list_weights",
    "load_backbone",
    "load_pretrained",
    "load_weights",
    "model_fingerprint",
    "published_state_dict",
    "read_metadata",
    "read_state_dict",
    "register_checkpoint",
    "register_weights",
    "resolve_pretrained",
    "save_published",
    "save_weights",
    "sha256_file",
    "split_fetch_options",
    "unregister_weights",
    "verify_file",
    "write_release",
]
