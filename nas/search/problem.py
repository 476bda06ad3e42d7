"""What a search optimises: the shape space it samples and the objectives it scores.

A :class:`SearchProblem` bundles the pieces a worker process needs: the discrete search
space, how a sampled shape becomes concrete layers (the supernet's depth table), the
accuracy evaluator, the latency predictor, and the model sizes for the memory estimate.
Workers build it from a picklable factory, so the same problem runs in any process or host.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from nas.errors import AnyshapeError
from nas.shape import Shape, ShapeSpace
from nas.workload import Workload


class AccuracyEvaluator(Protocol):
    """Scores a resolved shape on held-out data (cached by the search, so it may be slow)."""

    metric: str  # e.g. "heldout_ppl", "cosine"
    direction: Literal["maximize", "minimize"]

    def __call__(self, shape: Shape) -> float: ...


class LatencyPredictor(Protocol):
    """Predicts end-to-end latency (ms) of resolved shapes for one workload, in one batch call."""

    @property
    def source(self) -> str:  # "measured" | "roofline-estimate" (of the table it was fit on)
        ...

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> Sequence[float] | np.ndarray: ...


@dataclass(frozen=True)
class SearchSpace:
    """The discrete choices a trial samples: depth, a (heads, kv_heads) pair, an FFN width."""

    min_depth: int
    max_depth: int
    head_choices: tuple[tuple[int, int], ...]
    ffn_choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.min_depth <= self.max_depth:
            raise AnyshapeError(f"search space min_depth {self.min_depth} must be in 1..{self.max_depth}")
        if not self.head_choices or not self.ffn_choices:
            raise AnyshapeError("search space needs at least one head choice and one FFN choice")

    @classmethod
    def from_space(cls, space: ShapeSpace, min_depth: int = 1, ffn_steps: int = 8) -> SearchSpace:
        return cls(min_depth, space.num_layers, tuple(space.head_choices()), tuple(space.ffn_choices(ffn_steps)))

    def suggest(self, trial: Any) -> dict[str, int]:
        """Sample one shape (``depth`` is resolved to layers by the problem's resolver)."""
        depth = trial.suggest_int("depth", self.min_depth, self.max_depth)
        heads = self.head_choices[0]
        if len(self.head_choices) > 1:
            label = trial.suggest_categorical("heads", [f"{h}x{k}" for h, k in self.head_choices])
            heads = self.head_choices[[f"{h}x{k}" for h, k in self.head_choices].index(label)]
        ffn = trial.suggest_categorical("ffn", list(self.ffn_choices)) if len(self.ffn_choices) > 1 else self.ffn_choices[0]
        return {"depth": depth, "heads": heads[0], "kv_heads": heads[1], "ffn": int(ffn)}

    @property
    def size(self) -> int:
        return (self.max_depth - self.min_depth + 1) * len(self.head_choices) * len(self.ffn_choices)


@dataclass
class SearchProblem:
    """Everything one search worker needs to score a trial."""

    space: SearchSpace
    model_space: ShapeSpace
    resolve: Callable[[Mapping[str, Any]], Shape]
    accuracy: AccuracyEvaluator
    latency: LatencyPredictor
    vocab_size: int
    dtype_bytes: int = 4
    supernet_sha256: str = ""
    #: Study-level provenance written once (base model, supernet) so export needs only the storage.
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Shapes of the uniform baselines (drop-last depth x uniform width), scored once per study.
    baseline_shapes: list[dict[str, Any]] = field(default_factory=list)

    def memory_mb(self, shape: Shape, workload: Workload) -> float:
        """Weights of the subnet plus its KV cache at the workload's context length (MB)."""
        return memory_mb(self.model_space, shape, workload, self.vocab_size, self.dtype_bytes)


def memory_mb(space: ShapeSpace, shape: Shape, workload: Workload, vocab_size: int, dtype_bytes: int = 4) -> float:
    """Parameter bytes of the blocks and embeddings plus KV-cache bytes, in MiB."""
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    d, hd = space.hidden_size, space.head_dim
    attn = d * hd * (2 * shape.heads + 2 * shape.kv_heads)
    mlp = (3 if space.family != "bert" else 2) * d * shape.ffn
    params = len(shape.layers) * (attn + mlp) + vocab_size * d
    kv_cache = 0
    if space.family != "bert":  # encoders keep no cache
        kv_cache = 2 * len(shape.layers) * shape.kv_heads * hd * workload.context_len * workload.batch
    return (params + kv_cache) * dtype_bytes / 2**20


def shape_key(shape: Mapping[str, Any]) -> str:
    """A canonical string for caching evaluations by shape."""
    return json.dumps({k: shape[k] for k in sorted(shape)}, separators=(",", ":"))


def uniform_baselines(space: ShapeSpace, search: SearchSpace, fractions: Sequence[float] = (1.0, 0.75, 0.5)) -> list[dict[str, Any]]:
    """Drop-last depth x uniform width: the first ``d`` layers, heads and FFN at the same fraction."""
    shapes = []
    for depth in range(search.min_depth, search.max_depth + 1):
        for fraction in fractions:
            heads = min(search.head_choices, key=lambda p: (abs(p[0] / space.num_heads - fraction), -p[1]))
            ffn = min(search.ffn_choices, key=lambda f: abs(f / space.ffn_size - fraction))
            shapes.append({"layers": list(range(depth)), "heads": heads[0], "kv_heads": heads[1], "ffn": ffn, "fraction": fraction})
    return shapes
