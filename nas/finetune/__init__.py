"""Supernet fine-tuning: SMoL adapters, in-place distillation with the sandwich rule, training loop."""

from nas.adapters.config import ADAPTER_MODES, AdapterConfig
from nas.adapters.smol import SMoL, adapted, lora_targets, shape_features
from nas.finetune.config import FinetuneConfig

__all__ = ["ADAPTER_MODES", "AdapterConfig", "FinetuneConfig", "SMoL", "adapted", "lora_targets", "shape_features"]
