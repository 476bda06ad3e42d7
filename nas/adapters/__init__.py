"""Shape-aware adapters: SMoL's LoRA mixture and its config, merged into a shape's weights.

Below :mod:`nas.supernet` (whose extraction merges a trained supernet's adapters) and
:mod:`nas.finetune` (which trains them); it needs only the families and shapes.
"""

from nas.adapters.config import ADAPTER_MODES, AdapterConfig
from nas.adapters.smol import SMoL, adapted, lora_targets, shape_features

__all__ = ["ADAPTER_MODES", "AdapterConfig", "SMoL", "adapted", "lora_targets", "shape_features"]
