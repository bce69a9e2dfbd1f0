"""``terrafm quickstart``: world -> pretraining -> evaluation -> report, on the built-in world.

See :func:`terrafm.quickstart.pipeline.run_quickstart` and ``docs/quickstart.md``.
"""

from terrafm.quickstart.ablation import ABLATION_ROWS, run_ablation_table
from terrafm.quickstart.evaluate import ProbeConfig, evaluate_encoder
from terrafm.quickstart.pipeline import COMPONENTS, run_quickstart
from terrafm.quickstart.presets import PRESETS, Preset, get_preset

__all__ = [
    "ABLATION_ROWS",
    "COMPONENTS",
    "PRESETS",
    "Preset",
    "ProbeConfig",
    "evaluate_encoder",
    "get_preset",
    "run_ablation_table",
    "run_quickstart",
]
