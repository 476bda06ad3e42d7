"""Supernet fine-tuning: SMoL adapters, in-place distillation with the sandwich rule, training loop."""

from nas.finetune.config import ADAPTER_MODES, AdapterConfig, FinetuneConfig
from nas.finetune.smol import SMoL, adapted, lora_targets, shape_features

__all__ = ["ADAPTER_MODES", "AdapterConfig", "FinetuneConfig", "SMoL", "adapted", "lora_targets", "shape_features"]
