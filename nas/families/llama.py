"""Decoders with the Llama layout: q/k/v/o projections, gate/up/down MLP, RMSNorm.

State-dict keys look like ``model.layers.3.self_attn.q_proj.weight``. Grouped-query
attention follows :mod:`nas.shape`: whole KV groups are kept, each with the same number of
its query heads. Per-head norms (Qwen3's ``q_norm``/``k_norm``) act on ``head_dim`` and are
copied whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from torch import nn

from nas.families._base import Axis, ModelFamily, require
from nas.shape import Shape, ShapeSpace


class LlamaFamily(ModelFamily):
    name: ClassVar[str] = "llama"
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
    kind: ClassVar[Literal["decoder", "encoder"]] = "decoder"
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    layer_key: ClassVar[re.Pattern[str]] = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<idx>\d+)\.(?P<rest>.+)$")
    cut_rules: ClassVar[Mapping[str, tuple[int, Axis]]] = {
        "self_attn.q_proj.weight": (0, "q"),
        "self_attn.q_proj.bias": (0, "q"),
        "self_attn.k_proj.weight": (0, "kv"),
        "self_attn.k_proj.bias": (0, "kv"),
        "self_attn.v_proj.weight": (0, "kv"),
        "self_attn.v_proj.bias": (0, "kv"),
        "self_attn.o_proj.weight": (1, "q"),
        "mlp.gate_proj.weight": (0, "ffn"),
        "mlp.gate_proj.bias": (0, "ffn"),
        "mlp.up_proj.weight": (0, "ffn"),
        "mlp.up_proj.bias": (0, "ffn"),
        "mlp.down_proj.weight": (1, "ffn"),
    }

    #: transformers' LlamaConfig validates ``hidden_size % num_attention_heads == 0`` even with an
    #: explicit head_dim; Qwen2, Qwen3 and Mistral configs do not.
    heads_must_divide_hidden: ClassVar[bool] = True

    def space(self, config: Mapping[str, Any]) -> ShapeSpace:
        heads = require(config, "num_attention_heads", self.name)
        hidden = require(config, "hidden_size", self.name)
        kv = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or hidden // heads
        if heads % kv:
            from nas.errors import AnyshapeError

            raise AnyshapeError(f"config.json has {heads} attention heads, not a multiple of {kv} KV heads")
        return ShapeSpace(
            family=self.name,
            num_layers=require(config, "num_hidden_layers", self.name),
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            hidden_size=hidden,
            ffn_size=require(config, "intermediate_size", self.name),
            heads_divide=hidden if self.heads_must_divide_hidden else 0,
        )

    def sub_config(self, config: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
        space = self.space(config)
        assert shape.layers is not None
        new = dict(config)
        new.update(
            num_hidden_layers=len(shape.layers),
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            head_dim=space.head_dim,  # explicit: hidden_size // heads no longer holds
            intermediate_size=shape.ffn,
        )
        return new

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self._backbone(model).layers

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        self._backbone(model).layers = layers

    def attn_out_proj(self, layer: Any) -> nn.Linear:
        return layer.self_attn.o_proj

    def ffn_out_proj(self, layer: Any) -> nn.Linear:
        return layer.mlp.down_proj

    def ffn_in_projs(self, layer: Any) -> list[nn.Linear]:
        return [layer.mlp.gate_proj, layer.mlp.up_proj]

    def attn_in_projs(self, layer: Any) -> dict[str, nn.Linear]:
        attn = layer.self_attn
        return {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj}

    @staticmethod
    def _backbone(model: Any) -> Any:
        return model.model if hasattr(model, "model") and hasattr(model.model, "layers") else model
