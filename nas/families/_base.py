"""The model-family interface: how to find a family's layers, heads and FFN, and cut them.

A family knows, for one Hugging Face layout, which state-dict tensors belong to a layer,
along which dimension each is cut by query heads, KV heads or FFN channels, and how to
write the smaller config. Adding a family is one new file and one registry line in
:mod:`nas.families`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from torch import nn

from nas.shape import Shape, ShapeSpace

#: Which index set cuts a tensor: query heads, KV heads, or FFN channels.
Axis = Literal["q", "kv", "ffn"]


class ModelFamily(ABC):
    """One transformer layout (e.g. Llama-style decoders, BERT-style encoders)."""

    #: Stable name used in artifacts and messages.
    name: ClassVar[str]
    #: ``config.model_type`` values this family handles.
    model_types: ClassVar[tuple[str, ...]]
    #: "decoder" (causal LM, perplexity) or "encoder" (embeddings).
    kind: ClassVar[Literal["decoder", "encoder"]]
    #: The transformers auto class that loads an extracted checkpoint.
    auto_class: ClassVar[str]
    #: Matches a layer's state-dict key; groups ``prefix``, ``idx`` and ``rest``.
    layer_key: ClassVar[re.Pattern[str]]
    #: Per-layer tensor name (``rest``) -> (dim, axis) it is cut along; others are copied whole.
    cut_rules: ClassVar[Mapping[str, tuple[int, Axis]]]

    @abstractmethod
    def space(self, config: Mapping[str, Any]) -> ShapeSpace:
        """The shape space of a base model with this ``config.json``."""

    @abstractmethod
    def sub_config(self, config: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
        """The ``config.json`` of the subnet with the resolved ``shape``."""

    @abstractmethod
    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The model's list of transformer blocks."""

    @abstractmethod
    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        """Replace the model's list of blocks (used to skip layers in a masked forward)."""

    @abstractmethod
    def attn_out_proj(self, layer: nn.Module) -> nn.Linear:
        """The attention output projection (o_proj); its input holds one slice per query head."""

    @abstractmethod
    def ffn_out_proj(self, layer: nn.Module) -> nn.Linear:
        """The FFN output projection (down_proj); its input holds one entry per FFN channel."""

    def ffn_in_projs(self, layer: nn.Module) -> list[nn.Linear]:
        """The FFN projections whose outputs are FFN channels (up, gate)."""
        return []

    def attn_in_projs(self, layer: nn.Module) -> dict[str, nn.Linear]:
        """The attention input projections by role: ``q``, ``k``, ``v``."""
        return {}

    def layer_types(self, config: Mapping[str, Any]) -> list[str] | None:
        """Per-layer attention types (e.g. sliding / full) as transformers derives them, if any."""
        value = config.get("layer_types")
        return list(value) if isinstance(value, list) else None

    def masked_config_overrides(self, config: Any, layers: tuple[int, ...]) -> dict[str, Any]:
        """Config attributes to set while a forward skips layers (e.g. per-layer attention types)."""
        overrides: dict[str, Any] = {"num_hidden_layers": len(layers)}
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            overrides["layer_types"] = [layer_types[i] for i in layers]
        return overrides

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.model_types)})"


def require(config: Mapping[str, Any], key: str, family: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        from nas.errors import AnyshapeError

        raise AnyshapeError(f"config.json of this {family} model has no valid {key!r} (got {value!r})")
    return value
