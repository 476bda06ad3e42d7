"""Model families behind one interface; :func:`family_for` picks one from a ``config.json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.errors import AnyshapeError
from nas.families._base import Axis, ModelFamily
from nas.families.bert import BertFamily
from nas.families.llama import LlamaFamily
from nas.families.mistral import MistralFamily
from nas.families.qwen2 import Qwen2Family

#: Every supported family; adding one is one file and one line here.
FAMILIES: tuple[ModelFamily, ...] = (LlamaFamily(), Qwen2Family(), MistralFamily(), BertFamily())

__all__ = ["FAMILIES", "Axis", "ModelFamily", "family_by_name", "family_for", "supported_model_types"]


def supported_model_types() -> list[str]:
    return sorted(t for f in FAMILIES for t in f.model_types)


def family_for(config: Mapping[str, Any]) -> ModelFamily:
    """The family of a base model from its ``config.json`` contents."""
    model_type = config.get("model_type")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    archs = config.get("architectures") or []
    what = f"model_type {model_type!r}" + (f" ({', '.join(archs)})" if archs else "")
    raise AnyshapeError(f"unsupported architecture: {what}; supported model types: {', '.join(supported_model_types())}")


def family_by_name(name: str) -> ModelFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise AnyshapeError(f"unknown family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")
