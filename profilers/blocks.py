"""Build the torch module and inputs of one block point, from a config and random weights.

Blocks come from the family's own transformers classes (a one-layer model of the point's
widths), so they run exactly the code a stock checkpoint runs. Weights are random: a model is
built with transformers' ``no_init_weights`` (no slow init) and its parameters are then filled
from a small seeded random pool (fast, deterministic; latency does not depend on the values).
Every module takes positional tensors only, so the same module exports to ONNX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.families import ModelFamily
from nas.shape import Shape
from profilers.workload import BlockPoint

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Vocabulary of the throwaway embedding / LM head of models built only for one inner block.
_SMALL_VOCAB = 8


@dataclass(frozen=True)
class ModelSpec:
    """A model family's base config, as profiled: a name, the family and the config.json dict."""

    name: str
    family: ModelFamily
    config: Mapping[str, Any] = field(hash=False)


@dataclass
class BuiltBlock:
    """A module in eval mode with its example inputs (positional), on the target device."""

    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] | None = None  # None: the exporter's own

    def __call__(self) -> Any:
        return self.module(*self.inputs)


def fill_random_(module: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Fill every parameter from a seeded N(0, std) pool, tiled (fast for 100M+ parameters).

    Each parameter starts at its own offset in the pool, so no two parameters hold the same
    values: ONNX Runtime shares initializers of equal content, and a model whose layers all
    held one set of weights streamed about half the bytes a real one does (a chain of 40
    896x4864 MatMuls read 98.7 GB/s with equal weights, 46.1-46.5 with distinct ones, on a
    machine whose memory reads 46-50 GB/s; docs/BENCHMARKS.md, 2026-11-29).
    """
    gen = torch.Generator().manual_seed(seed)
    n = 1 << 20
    pool = torch.randn(n, generator=gen) * std
    pool = torch.cat([pool, pool])  # a window of n values from any offset
    params = list(module.parameters())
    offsets = torch.randperm(n, generator=gen)[: len(params)].tolist()  # distinct starts
    with torch.no_grad():
        for p, offset in zip(params, offsets):
            flat = p.data.view(-1)
            for start in range(0, flat.numel(), n):
                chunk = flat[start : start + n]
                chunk.copy_(pool[offset : offset + chunk.numel()])


def build_model(spec: ModelSpec, shape: Shape, *, vocab: int | None = None) -> nn.Module:
    """A random-weight model of the family's auto class with ``shape`` (resolved), in eval mode, fp32 on CPU."""
    import transformers
    from transformers.initialization import no_init_weights

    cfg = dict(spec.family.sub_config(spec.config, shape))
    if vocab is not None:
        cfg["vocab_size"] = vocab
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "auto_map", "quantization_config"):
        cfg.pop(key, None)
    config = transformers.AutoConfig.for_model(**cfg)
    auto: Any = getattr(transformers, spec.family.auto_class)
    transformers.utils.logging.set_verbosity_error()
    with no_init_weights():
        model = auto.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


class _DecoderAttention(nn.Module):
    """One decoder attention block; rotary cos/sin come in precomputed (once per forward in the model)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *past: torch.Tensor) -> torch.Tensor:
        cache = _ConcatCache(past[0], past[1]) if past else None
        out, _ = self.attn(hidden, position_embeddings=(cos, sin), attention_mask=None, cache=cache)
        return out  # (B, T, H)


class _ConcatCache:
    """The KV-cache step of transformers' DynamicCache (concatenate the new keys / values), as plain tensors."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values  # (B, kv, ctx, hd)

    def update(self, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, key], dim=-2), torch.cat([self.values, value], dim=-2)


class _EncoderAttention(nn.Module):
    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attention = attention

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.attention(hidden, attention_mask=None)[0]


class _EncoderFFN(nn.Module):
    """BERT's intermediate + output (dense, GELU, dense, residual, LayerNorm)."""

    def __init__(self, intermediate: nn.Module, output: nn.Module):
        super().__init__()
        self.intermediate, self.output = intermediate, output

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)


class _LastPositionHead(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden[:, -1:, :])  # (B, 1, V)


class _EncoderEmbed(nn.Module):
    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))


class _DecoderModel(nn.Module):
    """A whole causal LM: prefill (ids) or one decode step (ids, stacked past keys, stacked past values)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = model

    def forward(self, ids: torch.Tensor, *past: torch.Tensor) -> torch.Tensor:
        if not past:
            return self.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
        from transformers import DynamicCache

        keys, values = past  # (L, B, kv, ctx, hd)
        cache = DynamicCache(ddp_cache_data=[(keys[i], values[i]) for i in range(keys.shape[0])], config=self.model.config)
        return self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits


class _EncoderModel(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids)
        return self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state


#: How a decoder's whole-model decode step is built: ``stacked`` (one tensor of past keys and one of
#: values, the last position's logits: what torch runs in ``generate``) or ``exported`` (the graph
#: ``anyshape extract --onnx`` writes, :class:`nas.onnx_export.CachedDecoder`: Optimum's layout with
#: ``attention_mask``, ``position_ids``, per-layer ``past_key_values`` in and ``present`` out).
DECODE_GRAPHS = ("stacked", "exported")


class BlockBuilder:
    """Builds the module of each point; consecutive points with the same widths share one model."""

    def __init__(self, spec: ModelSpec, device: str = "cpu", seed: int = 0, decode_graph: str = "stacked"):
        if decode_graph not in DECODE_GRAPHS:
            raise ValueError(f"decode_graph is {decode_graph!r}; allowed: {', '.join(DECODE_GRAPHS)}")
        self.spec = spec
        self.device = torch.device(device)
        self.seed = seed
        self.decode_graph = decode_graph
        self.space = spec.family.space(spec.config)
        self._cached: tuple[tuple[Any, ...], nn.Module] | None = None

    def clear(self) -> None:
        self._cached = None

    def build(self, point: BlockPoint) -> BuiltBlock:
        module = self._module(point)
        inputs, names = self._inputs(point, module)
        if self._exported_decode(point):
            from nas.onnx_export import cache_names

            return BuiltBlock(module, inputs, names, ("logits", *cache_names(point.depth)[1]))
        return BuiltBlock(module, inputs, names)

    # -- modules -------------------------------------------------------------------------

    def _module(self, point: BlockPoint) -> nn.Module:
        key = (point.model_key, self._exported_decode(point))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        if self._cached is not None:  # free the previous model (HF modules hold cycles) before building the next
            self._cached = None
            import gc

            gc.collect()
        module = self._make_module(point).to(device=self.device, dtype=TORCH_DTYPES[point.dtype]).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        self._cached = (key, module)
        return module

    def _exported_decode(self, point: BlockPoint) -> bool:
        return (self.decode_graph == "exported" and point.block == "whole-model" and point.phase == "decode"
                and self.spec.family.kind == "decoder")

    def _make_module(self, point: BlockPoint) -> nn.Module:
        family, space = self.spec.family, self.space
        if point.block == "whole-model":
            shape = Shape(layers=tuple(range(point.depth)), heads=point.heads, kv_heads=point.kv_heads, ffn=point.ffn)
            model = build_model(self.spec, shape.resolve(space))
            fill_random_(model, self.seed)
            if self._exported_decode(point):
                from nas.onnx_export import CachedDecoder

                return CachedDecoder(model)
            return _DecoderModel(model) if family.kind == "decoder" else _EncoderModel(model)
        heads = point.heads or space.num_heads
        kv = point.kv_heads or space.num_kv_heads
        ffn = point.ffn or space.ffn_size
        shape = Shape(layers=(0,), heads=heads, kv_heads=kv, ffn=ffn).resolve(space)
        keep_vocab = point.block in ("embed", "head")
        model = build_model(self.spec, shape, vocab=None if keep_vocab else _SMALL_VOCAB)
        module = self._pick(model, point)
        fill_random_(module, self.seed)
        return module

    def _pick(self, model: nn.Module, point: BlockPoint) -> nn.Module:
        family = self.spec.family
        layer: Any = family.layers(model)[0]
        if family.kind == "decoder":
            full: Any = model
            backbone: Any = full.model
            picks: dict[str, Any] = {
                "attention": lambda: _DecoderAttention(layer.self_attn),
                "mlp": lambda: layer.mlp,
                "embed": lambda: backbone.embed_tokens,
                "norm": lambda: backbone.norm,
                "head": lambda: _LastPositionHead(full.lm_head),
            }
        else:
            base: Any = getattr(model, "base_model", model)
            picks = {
                "attention": lambda: _EncoderAttention(layer.attention),
                "mlp": lambda: _EncoderFFN(layer.intermediate, layer.output),
                "embed": lambda: _EncoderEmbed(base.embeddings),
                "norm": lambda: layer.attention.output.LayerNorm,
                "head": lambda: base.pooler,
            }
        return picks[point.block]()

    # -- inputs --------------------------------------------------------------------------

    def _inputs(self, point: BlockPoint, module: nn.Module) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...]]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        dtype = TORCH_DTYPES[point.dtype]
        b, s, c = point.batch, point.seq_len, point.context_len
        H, d = self.space.hidden_size, self.space.head_dim
        vocab = int(self.spec.config.get("vocab_size") or 2)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device=self.device, dtype=dtype)

        def ids(n: int) -> torch.Tensor:
            return torch.randint(0, vocab, (b, n), generator=gen).to(self.device)

        decoder = self.spec.family.kind == "decoder"
        if point.block == "attention" and decoder:
            hidden = rand(b, s, H)
            cos, sin = self._rotary(hidden, point)
            if point.phase == "decode":
                past = (rand(b, point.kv_heads, c, d), rand(b, point.kv_heads, c, d))
                return (hidden, cos, sin, *past), ("hidden", "cos", "sin", "past_key", "past_value")
            return (hidden, cos, sin), ("hidden", "cos", "sin")
        if point.block in ("attention", "mlp", "norm", "head"):
            return (rand(b, s, H),), ("hidden",)
        if point.block == "embed":
            return (ids(s),), ("input_ids",)
        # whole model
        if self._exported_decode(point):
            from nas.onnx_export import decoder_step_inputs

            step = decoder_step_inputs(module.model.config, batch=b, seq_len=1, past_len=c, seed=self.seed + 1)  # type: ignore[union-attr]
            tensors = (t.to(self.device, dtype) if t.is_floating_point() else t.to(self.device) for t in step.values())
            return tuple(tensors), tuple(step)
        if decoder and point.phase == "decode":
            L = point.depth
            past = (rand(L, b, point.kv_heads, c, d), rand(L, b, point.kv_heads, c, d))
            return (ids(1), *past), ("input_ids", "past_keys", "past_values")
        return (ids(s),), ("input_ids",)

    def _rotary(self, hidden: torch.Tensor, point: BlockPoint) -> tuple[torch.Tensor, torch.Tensor]:
        import transformers

        cfg = dict(self.spec.family.sub_config(self.spec.config, self.space.full_shape()))
        for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "auto_map", "quantization_config"):
            cfg.pop(key, None)
        config = transformers.AutoConfig.for_model(**cfg)
        model_cls = transformers.MODEL_MAPPING[type(config)]
        module_name = model_cls.__module__
        import importlib

        modeling = importlib.import_module(module_name)
        rotary_cls = next(getattr(modeling, n) for n in dir(modeling) if n.endswith("RotaryEmbedding"))
        rotary = rotary_cls(config=config).to(self.device)
        start = point.context_len if point.phase == "decode" else 0
        positions = torch.arange(start, start + point.seq_len, device=self.device).unsqueeze(0).expand(point.batch, -1)
        with torch.no_grad():
            cos, sin = rotary(hidden, positions)
        return cos, sin
