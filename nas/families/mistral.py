"""Mistral decoders: the Llama layout with sliding-window attention."""

from __future__ import annotations

from typing import ClassVar

from nas.families.llama import LlamaFamily


class MistralFamily(LlamaFamily):
    name: ClassVar[str] = "mistral"
    heads_must_divide_hidden: ClassVar[bool] = False
    model_types: ClassVar[tuple[str, ...]] = ("mistral",)
