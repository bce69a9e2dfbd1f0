"""TerraFM encoder, sensor stems, fusion and the named variants."""

from terrafm.models.vit import InputError, TerraFM, TerraFMConfig
from terrafm.models.zoo import MODEL_CONFIGS, create_model, list_models, load_model, model_config

__all__ = [
    "MODEL_CONFIGS",
    "InputError",
    "TerraFM",
    "TerraFMConfig",
    "create_model",
    "list_models",
    "load_model",
    "model_config",
]
