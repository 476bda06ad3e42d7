"""Qwen2 / Qwen2.5 decoders: the Llama layout with biases on q/k/v and per-layer attention types."""

from __future__ import annotations

from typing import ClassVar

from nas.families.llama import LlamaFamily


class Qwen2Family(LlamaFamily):
    name: ClassVar[str] = "qwen2"
    heads_must_divide_hidden: ClassVar[bool] = False
    model_types: ClassVar[tuple[str, ...]] = ("qwen2", "qwen3")
