"""A synthetic search problem that needs no model: for tests and for timing the search itself.

Accuracy rises with depth and width with diminishing returns (plus a deterministic,
shape-keyed wobble so that fronts are not trivially one line); latency is linear in the
FLOPs of the kept blocks. Both are pure functions of the shape.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from nas.search.problem import SearchProblem, SearchSpace, uniform_baselines
from nas.shape import Shape, ShapeSpace
from nas.workload import Workload

SPACE = ShapeSpace("llama", num_layers=8, num_heads=8, num_kv_heads=4, head_dim=16, hidden_size=128, ffn_size=512)
SHA = "f" * 64


class FakeAccuracy:
    metric = "fake_score"
    direction: Literal["maximize", "minimize"] = "maximize"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls = 0

    def __call__(self, shape: Shape) -> float:
        assert shape.layers is not None and shape.heads is not None and shape.ffn is not None
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        depth = len(shape.layers) / SPACE.num_layers
        width = 0.5 * shape.heads / SPACE.num_heads + 0.5 * shape.ffn / SPACE.ffn_size
        wobble = int(hashlib.sha256(repr(shape).encode()).hexdigest()[:6], 16) / 16**6 * 0.02
        return round(1 - math.exp(-3 * depth) * 0.6 - math.exp(-2 * width) * 0.3 + wobble, 9)


class FakeLatency:
    source = "measured"

    def predict(self, shapes: Sequence[Shape], workload: Workload) -> list[float]:
        out = []
        for shape in shapes:
            assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
            per_layer = 4 * SPACE.hidden_size * SPACE.head_dim * (shape.heads + shape.kv_heads) + 3 * SPACE.hidden_size * shape.ffn
            out.append(0.2 + len(shape.layers) * per_layer * workload.seq_len * workload.batch / 2e7)
        return out


def resolve(sampled: Mapping[str, Any]) -> Shape:
    data = dict(sampled)
    if "depth" in data:
        data["layers"] = list(range(data.pop("depth")))
    return Shape.from_dict(data).resolve(SPACE)


def fake_problem(config: Any) -> SearchProblem:
    """Factory for ``SearchConfig(factory="nas.search.testing:fake_problem")``."""
    args = dict(getattr(config, "factory_args", {}) or {})
    search = SearchSpace.from_space(SPACE, min_depth=int(args.get("min_depth", 1)))
    return SearchProblem(
        space=search,
        model_space=SPACE,
        resolve=resolve,
        accuracy=FakeAccuracy(float(args.get("delay_s", 0.0))),
        latency=FakeLatency(),
        vocab_size=1000,
        supernet_sha256=SHA,
        provenance={"base_model": {"source": "fake-model", "sha256": SHA}, "supernet": {"path": "fake-supernet", "sha256": SHA}},
        baseline_shapes=uniform_baselines(SPACE, search),
    )
