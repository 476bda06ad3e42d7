"""Qwen2 / Qwen2.5 decoders: the Llama layout with biases on q/k/v and per-layer attention types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nas.families.llama import LlamaFamily


class Qwen2Family(LlamaFamily):
    name: ClassVar[str] = "qwen2"
    heads_must_divide_hidden: ClassVar[bool] = False
    model_types: ClassVar[tuple[str, ...]] = ("qwen2", "qwen3")

    def layer_types(self, config: Mapping[str, Any]) -> list[str] | None:
        """Qwen2Config's rule: sliding attention from layer ``max_window_layers`` on, if enabled."""
        explicit = super().layer_types(config)
        if explicit is not None:
            return explicit
        window = config.get("sliding_window", 4096) if config.get("use_sliding_window", False) else None
        first_sliding = config.get("max_window_layers", 28)
        n = int(config["num_hidden_layers"])
        return ["sliding_attention" if window is not None and i >= first_sliding else "full_attention" for i in range(n)]
