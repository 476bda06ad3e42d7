"""The lookup-table estimate: a whole model's latency as the sum of its measured blocks.

Decoders: ``embed + depth * (2 * norm + attention + mlp) + norm + head``; encoders:
``embed + depth * (attention + mlp) + head`` (their norms live inside the blocks). Widths
the table did not measure are interpolated linearly between the nearest measured widths
(FFN channels; query heads at the same KV-head count).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from nas.errors import AnyshapeError
from nas.shape import Shape
from nas.workload import Workload


def workload_keys(workload: Workload) -> tuple[str, int, int, int]:
    """(phase, batch, seq_len, context_len) as the table's rows name them."""
    if workload.phase == "prefill":
        return ("prefill", workload.batch, workload.seq_len, 0)
    return ("decode", workload.batch, 1, workload.seq_len)


class BlockLUT:
    """Per-workload block latencies (p50, ms) of one table, with width interpolation."""

    def __init__(self, rows: Sequence[dict[str, Any]], kind: str):
        self.kind = kind
        self._fixed: dict[tuple[Any, ...], float] = {}
        self._mlp: dict[tuple[Any, ...], list[tuple[int, float]]] = defaultdict(list)
        self._attn: dict[tuple[Any, ...], list[tuple[int, float]]] = defaultdict(list)
        self.workloads: set[tuple[str, int, int, int]] = set()
        for r in rows:
            w = (r["phase"], r["batch"], r["seq_len"], r["context_len"])
            if r["block"] in ("embed", "head", "norm"):
                self._fixed[(r["block"], *w)] = r["latency_ms_p50"]
            elif r["block"] == "mlp":
                self._mlp[w].append((r["ffn"], r["latency_ms_p50"]))
            elif r["block"] == "attention":
                self._attn[(*w, r["kv_heads"])].append((r["heads"], r["latency_ms_p50"]))
            else:
                continue
            self.workloads.add(w)
        for points in (*self._mlp.values(), *self._attn.values()):
            points.sort()

    def check(self, workload: Workload) -> tuple[str, int, int, int]:
        w = workload_keys(workload)
        if w not in self.workloads or w not in self._mlp:
            known = ", ".join(sorted(_name(k) for k in self.workloads)) or "none"
            lengths = f'"seq_len": [{workload.seq_len}]' if workload.phase == "prefill" else f'"context_len": [{workload.seq_len}]'
            raise AnyshapeError(f"the latency table has no block rows for workload {workload.name}; it has: {known}; measure it "
                                f"with anyshape profile ... --grid '{{\"batch\": [{workload.batch}], {lengths}}}' "
                                "(the grid's other fields as the table's meta.json has them)")
        return w

    def total_ms(self, shape: Shape, workload: Workload) -> float:
        assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
        w = self.check(workload)
        attn = self.attention_ms(w, shape.heads, shape.kv_heads)
        mlp = _interpolate(self._mlp[w], shape.ffn, "ffn")
        embed = self._fixed.get(("embed", *w), 0.0)
        head = self._fixed.get(("head", *w), 0.0)
        norm = self._fixed.get(("norm", *w), 0.0)
        if self.kind == "decoder":
            return embed + len(shape.layers) * (2 * norm + attn + mlp) + norm + head
        return embed + len(shape.layers) * (attn + mlp) + head

    def attention_ms(self, w: tuple[str, int, int, int], heads: int, kv_heads: int) -> float:
        points = self._attn.get((*w, kv_heads))
        if points:
            return _interpolate(points, heads, "heads")
        # no row at this KV count: scale the nearest KV count's curve by query heads
        options = sorted(k for (*ww, k) in self._attn if tuple(ww) == w)
        if not options:
            raise AnyshapeError(f"the latency table has no attention rows for workload {_name(w)}")
        nearest = min(options, key=lambda k: abs(k - kv_heads))
        return _interpolate(self._attn[(*w, nearest)], heads, "heads")


def _interpolate(points: list[tuple[int, float]], x: int, what: str) -> float:
    xs = [p[0] for p in points]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return points[i][1]
    if len(points) == 1:
        return points[0][1] * x / max(points[0][0], 1)
    if i == 0:
        (x0, y0), (x1, y1) = points[0], points[1]
    elif i == len(points):
        (x0, y0), (x1, y1) = points[-2], points[-1]
    else:
        (x0, y0), (x1, y1) = points[i - 1], points[i]
    if x1 == x0:
        raise AnyshapeError(f"the latency table has repeated {what} widths")
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 1e-6)


def _name(w: tuple[Any, ...]) -> str:
    phase, batch, seq_len, context_len = w[:4]
    return f"{phase}:b{batch}:s{seq_len}" if phase == "prefill" else f"{phase}:b{batch}:c{context_len}"
