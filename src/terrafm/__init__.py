"""terrafm: the TerraFM multisensor Earth-observation foundation model, complete.

Quick use::

    import terrafm
    model = terrafm.create_model("terrafm_base", pretrained="TerraFM-B.pth").eval()
    x = terrafm.normalize(raw_dn, "s2_l2a", bands=["B01", ..., "B12"])
    emb = model({"s2_l2a": x[None]})
"""

from terrafm.models import InputError, TerraFM, TerraFMConfig, create_model, list_models
from terrafm.sensors import SENSORS, BandError, Sensor, get_sensor, normalize

__version__ = "0.1.0"

__all__ = [
    "SENSORS",
    "BandError",
    "InputError",
    "Sensor",
    "TerraFM",
    "TerraFMConfig",
    "__version__",
    "create_model",
    "get_sensor",
    "list_models",
    "normalize",
]
