"""Analytic FLOPs and bytes of every block point: the inputs of the roofline and the fake profiler.

Counts are per forward of the point's workload. ``weight_bytes`` are the parameters the block
reads (for an embedding only the gathered rows); ``activation_bytes`` the activations and KV
cache it reads and writes. A multiply-add is 2 FLOPs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.families import ModelFamily
from profilers.workload import DTYPE_BYTES, BlockPoint


@dataclass(frozen=True)
class ModelDims:
    """The sizes of a base model that block costs depend on."""

    kind: str  # "decoder" | "encoder"
    hidden: int
    head_dim: int
    vocab: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    gated_mlp: bool  # three FFN matrices (gate, up, down) or two (BERT)
    attn_bias: bool

    @classmethod
    def from_config(cls, family: ModelFamily, config: Mapping[str, Any]) -> ModelDims:
        space = family.space(config)
        decoder = family.kind == "decoder"
        bias = bool(config.get("attention_bias", False)) or config.get("model_type") == "qwen2" or not decoder
        return cls(
            kind=family.kind,
            hidden=space.hidden_size,
            head_dim=space.head_dim,
            vocab=int(config.get("vocab_size") or 0),
            layers=space.num_layers,
            heads=space.num_heads,
            kv_heads=space.num_kv_heads,
            ffn=space.ffn_size,
            gated_mlp=decoder,
            attn_bias=bias,
        )


@dataclass(frozen=True)
class Cost:
    flops: float
    weight_bytes: float
    activation_bytes: float

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.weight_bytes + other.weight_bytes,
                    self.activation_bytes + other.activation_bytes)

    def scale(self, k: float) -> Cost:
        return Cost(self.flops * k, self.weight_bytes * k, self.activation_bytes * k)


def block_cost(dims: ModelDims, point: BlockPoint) -> Cost:
    """FLOPs and bytes of ``point`` for a model with ``dims``."""
    p = DTYPE_BYTES[point.dtype]
    tokens = point.batch * point.seq_len
    if point.block == "attention":
        return _attention(dims, point, point.heads, point.kv_heads, p)
    if point.block == "mlp":
        return _mlp(dims, tokens, point.ffn, p)
    if point.block == "embed":
        return _embed(dims, tokens, p)
    if point.block == "norm":
        return _norm(dims, tokens, p)
    if point.block == "head":
        return _head(dims, point, p)
    return whole_model_cost(dims, point)


def whole_model_cost(dims: ModelDims, point: BlockPoint) -> Cost:
    p = DTYPE_BYTES[point.dtype]
    tokens = point.batch * point.seq_len
    layer = _attention(dims, point, point.heads, point.kv_heads, p) + _mlp(dims, tokens, point.ffn, p)
    if dims.kind == "decoder":
        layer = layer + _norm(dims, tokens, p).scale(2)
        outside = _embed(dims, tokens, p) + _norm(dims, tokens, p) + _head(dims, point, p)
    else:
        outside = _embed(dims, tokens, p) + _head(dims, point, p)
    return layer.scale(point.depth) + outside


def _attention(dims: ModelDims, point: BlockPoint, heads: int, kv: int, p: int) -> Cost:
    H, d = dims.hidden, dims.head_dim
    b, s = point.batch, point.seq_len
    q_dim, kv_dim = heads * d, kv * d
    proj_params = H * q_dim + 2 * H * kv_dim + q_dim * H
    bias = (q_dim + 2 * kv_dim + (H if dims.kind == "encoder" else 0)) if dims.attn_bias else 0
    proj_flops = 2 * b * s * proj_params
    keys = point.context_len + s if point.phase == "decode" else s
    causal = 0.5 if (dims.kind == "decoder" and point.phase == "prefill") else 1.0
    attn_flops = 2 * 2 * b * heads * s * keys * d * causal
    act = b * s * (2 * H + 2 * q_dim + 2 * kv_dim)
    if point.phase == "decode":  # read the cache, and write it once more when it grows (concatenation)
        act += 2 * 2 * b * kv_dim * keys
    if dims.kind == "encoder":  # the block's LayerNorm
        act += 2 * b * s * H
    return Cost(proj_flops + attn_flops, (proj_params + bias) * p, act * p)


def _mlp(dims: ModelDims, tokens: int, ffn: int, p: int) -> Cost:
    H = dims.hidden
    mats = 3 if dims.gated_mlp else 2
    params = mats * H * ffn + (0 if dims.gated_mlp else ffn + H)
    act = tokens * (2 * H + (mats - 1) * ffn * 2)
    return Cost(2 * tokens * mats * H * ffn, params * p, act * p)


def _embed(dims: ModelDims, tokens: int, p: int) -> Cost:
    H = dims.hidden
    rows = 3 if dims.kind == "encoder" else 1  # word + position + token type
    return Cost(tokens * H * rows, tokens * H * rows * p, tokens * H * p)


def _norm(dims: ModelDims, tokens: int, p: int) -> Cost:
    H = dims.hidden
    return Cost(5 * tokens * H, H * p, 2 * tokens * H * p)


def _head(dims: ModelDims, point: BlockPoint, p: int) -> Cost:
    H, b = dims.hidden, point.batch
    if dims.kind == "encoder":  # pooler: dense + tanh on the first token
        return Cost(2 * b * H * H, (H * H + H) * p, 2 * b * H * p)
    return Cost(2 * b * H * dims.vocab, H * dims.vocab * p, b * (H + dims.vocab) * p)


def weight_bytes(dims: ModelDims, point: BlockPoint) -> float:
    return block_cost(dims, point).weight_bytes
