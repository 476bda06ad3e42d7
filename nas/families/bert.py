"""BERT-style encoders (BertModel, all-MiniLM-L6-v2, RoBERTa).

Keys look like ``encoder.layer.3.attention.self.query.weight`` (with a ``bert.`` or
``roberta.`` prefix in task models). Heads are not cut: transformers 5 computes BERT's head
size as ``hidden_size / num_attention_heads`` and no longer supports ``pruned_heads``, so a
stock ``BertModel`` cannot load fewer heads of the original size. Depth and FFN width are cut.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from torch import nn

from nas.families._base import Axis, ModelFamily, require
from nas.shape import Shape, ShapeSpace

HEADS_NOTE = (
    "BERT-style encoders keep all heads: stock transformers derives the head size from "
    "hidden_size / num_attention_heads and cannot load fewer heads"
)


class BertFamily(ModelFamily):
    name: ClassVar[str] = "bert"
    model_types: ClassVar[tuple[str, ...]] = ("bert", "roberta")
    kind: ClassVar[Literal["decoder", "encoder"]] = "encoder"
    auto_class: ClassVar[str] = "AutoModel"
    layer_key: ClassVar[re.Pattern[str]] = re.compile(
        r"^(?P<prefix>(?:.*\.)?encoder\.layer)\.(?P<idx>\d+)\.(?P<rest>.+)$"
    )
    cut_rules: ClassVar[Mapping[str, tuple[int, Axis]]] = {
        "attention.self.query.weight": (0, "q"),
        "attention.self.query.bias": (0, "q"),
        "attention.self.key.weight": (0, "q"),
        "attention.self.key.bias": (0, "q"),
        "attention.self.value.weight": (0, "q"),
        "attention.self.value.bias": (0, "q"),
        "attention.output.dense.weight": (1, "q"),
        "intermediate.dense.weight": (0, "ffn"),
        "intermediate.dense.bias": (0, "ffn"),
        "output.dense.weight": (1, "ffn"),
    }

    def space(self, config: Mapping[str, Any]) -> ShapeSpace:
        heads = require(config, "num_attention_heads", self.name)
        hidden = require(config, "hidden_size", self.name)
        return ShapeSpace(
            family=self.name,
            num_layers=require(config, "num_hidden_layers", self.name),
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            hidden_size=hidden,
            ffn_size=require(config, "intermediate_size", self.name),
            heads_cuttable=False,
            heads_note=HEADS_NOTE,
        )

    def sub_config(self, config: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
        assert shape.layers is not None
        new = dict(config)
        new.update(num_hidden_layers=len(shape.layers), intermediate_size=shape.ffn)
        return new

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self._encoder(model).layer

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        self._encoder(model).layer = layers

    def attn_out_proj(self, layer: Any) -> nn.Linear:
        return layer.attention.output.dense

    def ffn_out_proj(self, layer: Any) -> nn.Linear:
        return layer.output.dense

    def ffn_in_projs(self, layer: Any) -> list[nn.Linear]:
        return [layer.intermediate.dense]

    def attn_in_projs(self, layer: Any) -> dict[str, nn.Linear]:
        attn = layer.attention.self
        return {"q": attn.query, "k": attn.key, "v": attn.value}

    @staticmethod
    def _encoder(model: Any) -> Any:
        if hasattr(model, "encoder"):
            return model.encoder
        base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if base is not None and hasattr(base, "encoder"):
            return base.encoder
        raise AttributeError(f"{type(model).__name__} has no encoder")
