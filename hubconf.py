"""torch.hub entry points for TerraFM.

    model = torch.hub.load("/path/to/terrafm", "terrafm_base", source="local", pretrained="TerraFM-B.pth")

``pretrained`` takes a published ``.pth``, a terrafm ``.safetensors``, a registry weights name
(``terrafm_base.published``, with ``sha256=...``) or ``True``; see ``docs/ecosystem.md``.
Inputs are a dict of normalised tensors keyed by sensor (``{"s2_l2a": x}``), see ``terrafm.normalize``.
"""

import os
import sys

dependencies = ["torch", "timm", "safetensors", "numpy"]

# A clone that was not pip-installed: import the package from its src/ folder.
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if "terrafm" not in sys.modules and os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)


def terrafm_tiny(pretrained=None, **kwargs):
    """TerraFM tiny (D=96, depth 4): tests and CPU demos. Same arguments as ``terrafm_base``."""
    from terrafm.hub import build

    return build("terrafm_tiny", pretrained, **kwargs)


def terrafm_small(pretrained=None, **kwargs):
    """TerraFM small (D=384, depth 12). Same arguments as ``terrafm_base``."""
    from terrafm.hub import build

    return build("terrafm_small", pretrained, **kwargs)


def terrafm_base(pretrained=None, **kwargs):
    """TerraFM-B (ViT-B/16, D=768, depth 12), the published base model.

    Args:
        pretrained: None (random init), a path to TerraFM-B.pth or a terrafm .safetensors, a registry
            name ("terrafm_base.published"), or True for the default registry entry.
        **kwargs: sha256=, revision=, allow_unverified=, cache_dir= for registry downloads; any other
            keyword overrides the model config (e.g. drop_path_rate=0.1).
    """
    from terrafm.hub import build

    return build("terrafm_base", pretrained, **kwargs)


def terrafm_large(pretrained=None, **kwargs):
    """TerraFM-L (ViT-L/16, D=1024, depth 24), the published large model. Same arguments as ``terrafm_base``."""
    from terrafm.hub import build

    return build("terrafm_large", pretrained, **kwargs)
