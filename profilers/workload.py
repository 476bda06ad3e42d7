"""What a table measures: the points (block, phase, workload, widths) over a model's shape space.

A decoder whole model costs ``embed + depth * (2 * norm + attention + mlp) + norm + head``;
an encoder (BERT) ``embed + depth * (attention + mlp) + head`` (its LayerNorms live inside the
attention and MLP blocks; the ``norm`` rows are informative). Widths that do not apply to a
block are 0 in the table (an ``mlp`` row has ``heads = kv_heads = 0``).

Prefill is one forward of ``seq_len`` prompt tokens with no cache; its ``head`` computes the
logits of the last position only (what generation needs for the first token). Decode is one new
token (``seq_len = 1``) attending to a KV cache of ``context_len`` tokens.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from nas.errors import AnyshapeError
from nas.families import ModelFamily
from nas.shape import Shape, ShapeSpace

logger = logging.getLogger(__name__)

BLOCKS = ("attention", "mlp", "embed", "head", "norm", "whole-model")
PHASES = ("prefill", "decode")
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

Block = Literal["attention", "mlp", "embed", "head", "norm", "whole-model"]
Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class BlockPoint:
    """One row of a latency table before it is measured."""

    block: Block
    phase: Phase
    batch: int
    seq_len: int  # tokens processed: the prompt length (prefill) or 1 (decode)
    context_len: int  # KV-cache length a decode step attends to (0 for prefill)
    depth: int  # layers (1 for a single block, 0 for embed / head / norm)
    heads: int
    kv_heads: int
    ffn: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise AnyshapeError(f"point.block is {self.block!r}; allowed: {', '.join(BLOCKS)}")
        if self.phase not in PHASES:
            raise AnyshapeError(f"point.phase is {self.phase!r}; allowed: {', '.join(PHASES)}")
        if self.dtype not in DTYPES:
            raise AnyshapeError(f"point.dtype is {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.batch < 1 or self.seq_len < 1 or self.context_len < 0:
            raise AnyshapeError(f"point {self.key}: batch and seq_len must be >= 1, context_len >= 0")

    @property
    def key(self) -> str:
        """A stable id: resume skips points whose key is already in the partial table."""
        return (
            f"{self.block}|{self.phase}|b{self.batch}|s{self.seq_len}|c{self.context_len}|"
            f"d{self.depth}|h{self.heads}|k{self.kv_heads}|f{self.ffn}|{self.dtype}"
        )

    @property
    def model_key(self) -> tuple[Any, ...]:
        """Points with the same model_key can reuse one built module (phases of one shape)."""
        return (self.block, self.depth, self.heads, self.kv_heads, self.ffn, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_int_list(name: str, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AnyshapeError(f"grid.{name} must be positive integers, got {value!r}")
        out.append(v)
    if not out:
        raise AnyshapeError(f"grid.{name} is empty")
    return tuple(out)


@dataclass(frozen=True)
class GridConfig:
    """Which points a table holds. Defaults follow ARCHITECTURE.md's workloads."""

    workloads: tuple[str, ...] = field(
        default=(),
        metadata={"help": "the workloads to measure, as prefill:b1:s128 / decode:b1:c128 names, instead of every "
                          "combination of batch, seq_len and context_len"},
    )
    batch: tuple[int, ...] = field(default=(1,), metadata={"help": "batch sizes"})
    seq_len: tuple[int, ...] = field(default=(128,), metadata={"help": "prompt lengths (prefill / encoder)"})
    context_len: tuple[int, ...] = field(default=(128,), metadata={"help": "KV-cache lengths (decode)"})
    phases: tuple[str, ...] = field(default=("prefill", "decode"), metadata={"help": "decoder phases to measure"})
    blocks: tuple[str, ...] = field(default=BLOCKS, metadata={"help": "block kinds to measure"})
    ffn_steps: int = field(default=8, metadata={"help": "FFN widths: this many even fractions of the full size"})
    head_pairs: int = field(default=0, metadata={"help": "at most this many (heads, kv_heads) pairs, evenly spread (0 = all)"})
    whole_model_samples: int = field(default=6, metadata={"help": "whole-model shapes: the full model + random ones"})
    whole_model_ffn_steps: int = field(
        default=0, metadata={"help": "FFN widths the random whole-model shapes draw from: this many even fractions (0 = ffn_steps)"}
    )
    other_workload_samples: int = field(
        default=0,
        metadata={"help": "whole-model shapes of every workload but each phase's first (the first batch and length): the first "
                          "this many of the same shapes (0 = all); the predictor learns the others from batch and length"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the random whole-model shapes"})
    dtype: str = field(default="float32", metadata={"help": "float32 | float16 | bfloat16"})

    def __post_init__(self) -> None:
        for name in ("batch", "seq_len", "context_len"):
            object.__setattr__(self, name, _as_int_list(name, getattr(self, name)))
        names = tuple(self.workloads) if isinstance(self.workloads, (list, tuple)) else (self.workloads,)
        from nas.workload import Workload

        parsed = [Workload.parse(str(n)).name for n in names]
        if len(set(parsed)) != len(parsed):
            raise AnyshapeError(f"grid.workloads repeats a workload: {list(names)}")
        object.__setattr__(self, "workloads", tuple(parsed))
        phases = tuple(self.phases) if isinstance(self.phases, (list, tuple)) else (self.phases,)
        bad = [p for p in phases if p not in PHASES]
        if bad or not phases:
            raise AnyshapeError(f"grid.phases is {list(phases)}; allowed: {', '.join(PHASES)}")
        object.__setattr__(self, "phases", phases)
        blocks = tuple(self.blocks) if isinstance(self.blocks, (list, tuple)) else (self.blocks,)
        bad = [b for b in blocks if b not in BLOCKS]
        if bad or not blocks:
            raise AnyshapeError(f"grid.blocks has {bad or 'nothing'}; allowed: {', '.join(BLOCKS)}")
        object.__setattr__(self, "blocks", blocks)
        if self.ffn_steps < 1:
            raise AnyshapeError(f"grid.ffn_steps is {self.ffn_steps}; it must be >= 1")
        if self.head_pairs < 0:
            raise AnyshapeError(f"grid.head_pairs is {self.head_pairs}; it must be >= 0 (0 = all)")
        if self.whole_model_samples < 0:
            raise AnyshapeError(f"grid.whole_model_samples is {self.whole_model_samples}; it must be >= 0")
        if self.other_workload_samples < 0:
            raise AnyshapeError(f"grid.other_workload_samples is {self.other_workload_samples}; it must be >= 0 (0 = all)")
        if self.whole_model_ffn_steps < 0:
            raise AnyshapeError(f"grid.whole_model_ffn_steps is {self.whole_model_ffn_steps}; it must be >= 0 (0 = ffn_steps)")
        if self.dtype not in DTYPES:
            raise AnyshapeError(f"grid.dtype is {self.dtype!r}; allowed: {', '.join(DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridConfig:
        if not isinstance(data, Mapping):
            raise AnyshapeError(f"grid must be a mapping like {{'seq_len': [128], 'ffn_steps': 4}}, got {data!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnyshapeError(f"grid has unknown field(s) {unknown}; allowed: {', '.join(sorted(known))}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def head_grid(space: ShapeSpace, limit: int = 0) -> list[tuple[int, int]]:
    """The (heads, kv_heads) pairs to measure: all, or ``limit`` spread evenly (ends included)."""
    pairs = space.head_choices()
    if limit <= 0 or limit >= len(pairs):
        return pairs
    if limit == 1:
        return [pairs[-1]]
    idx = sorted({round(i * (len(pairs) - 1) / (limit - 1)) for i in range(limit)})
    return [pairs[i] for i in idx]


def sample_shapes(space: ShapeSpace, grid: GridConfig) -> list[Shape]:
    """The full shape, then ``whole_model_samples - 1`` distinct random ones (seeded).

    Shapes are distinct in (depth, heads, kv_heads, ffn), the only things latency depends on (which
    layers are kept does not matter: they are alike). Their FFN widths come from
    ``whole_model_ffn_steps`` even fractions, so a finer grid than the blocks' ``ffn_steps`` puts
    whole-model shapes between the measured widths, where a predictor has to interpolate. Where the
    space holds fewer distinct shapes than asked, all of them are returned, with a warning.
    """
    if grid.whole_model_samples == 0:
        return []
    rng = random.Random(grid.seed)
    pairs = space.head_choices()
    ffns = space.ffn_choices(grid.whole_model_ffn_steps or grid.ffn_steps)
    available = space.num_layers * len(pairs) * len(ffns)
    if grid.whole_model_samples > available:
        logger.warning(
            "grid asks for %d whole-model shapes but this shape space holds only %d distinct ones; measuring all of them "
            "(raise whole_model_ffn_steps for more)", grid.whole_model_samples, available,
        )
    shapes = [space.full_shape()]
    seen = {(space.num_layers, space.num_heads, space.num_kv_heads, space.ffn_size)}
    for _ in range(100 * grid.whole_model_samples):
        if len(shapes) >= min(grid.whole_model_samples, available):
            break
        depth = rng.randint(1, space.num_layers)
        heads, kv = rng.choice(pairs)
        ffn = rng.choice(ffns)
        if (depth, heads, kv, ffn) in seen:
            continue
        seen.add((depth, heads, kv, ffn))
        layers = tuple(sorted(rng.sample(range(space.num_layers), depth)))
        shapes.append(Shape(layers=layers, heads=heads, kv_heads=kv, ffn=ffn).resolve(space))
    return shapes


def whole_model_point(shape: Shape, workload: Any) -> BlockPoint:
    """The latency-table point of ``shape`` run as a whole model on ``workload`` (a :class:`nas.workload.Workload`)."""
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    phase = workload.phase
    return BlockPoint(
        "whole-model", phase, workload.batch, workload.seq_len if phase == "prefill" else 1,
        0 if phase == "prefill" else workload.seq_len, len(shape.layers), shape.heads, shape.kv_heads, shape.ffn,
    )  # fmt: skip


def anchor_point(space: ShapeSpace, point: BlockPoint) -> BlockPoint:
    """The fixed whole-model point that ``point``'s workload is anchored to (``protocol.anchor``).

    The middle of the shape space: half the layers (rounded up), the middle ``(heads, kv_heads)``
    pair and half the FFN, on ``point``'s phase, batch, lengths and dtype. The same for every
    point of a workload and for ``anyshape verify``, so their ratios share one unit.
    """
    pairs = space.head_choices()
    heads, kv = pairs[len(pairs) // 2]
    return BlockPoint("whole-model", point.phase, point.batch, point.seq_len, point.context_len,
                      (space.num_layers + 1) // 2, heads, kv, space.ffn_choices(2)[0], point.dtype)


def workloads(family: ModelFamily, grid: GridConfig) -> list[tuple[Phase, int, int, int]]:
    """(phase, batch, seq_len, context_len) for every workload of the grid; encoders only prefill.

    ``grid.workloads`` names them one by one; else every combination of batch and lengths.
    """
    out: list[tuple[Phase, int, int, int]] = []
    phases: tuple[str, ...] = ("prefill",) if family.kind == "encoder" else grid.phases
    if grid.workloads:
        from nas.workload import Workload

        for name in grid.workloads:
            w = Workload.parse(name)
            if w.phase not in phases:
                raise AnyshapeError(f"grid.workloads has {name}, but this {family.kind} grid measures only {', '.join(phases)}")
            out.append((w.phase, w.batch, w.seq_len, 0) if w.phase == "prefill" else (w.phase, w.batch, 1, w.seq_len))
        return out
    for batch in grid.batch:
        if "prefill" in phases:
            out.extend(("prefill", batch, s, 0) for s in grid.seq_len)
        if "decode" in phases:
            out.extend(("decode", batch, 1, c) for c in grid.context_len)
    return out


def build_points(family: ModelFamily, space: ShapeSpace, grid: GridConfig) -> list[BlockPoint]:
    """Every point of the table, grouped so that points sharing a built module are adjacent."""
    loads = workloads(family, grid)
    dt = grid.dtype
    points: list[BlockPoint] = []

    def add(block: Block, depth: int, heads: int, kv: int, ffn: int) -> None:
        for phase, b, s, c in loads:
            points.append(BlockPoint(block, phase, b, s, c, depth, heads, kv, ffn, dt))

    if "attention" in grid.blocks:
        for heads, kv in head_grid(space, grid.head_pairs):
            add("attention", 1, heads, kv, 0)
    if "mlp" in grid.blocks:
        for ffn in space.ffn_choices(grid.ffn_steps):
            add("mlp", 1, 0, 0, ffn)
    simple: tuple[Block, ...] = ("embed", "norm", "head")
    for block in simple:
        if block in grid.blocks:
            add(block, 0, 0, 0, 0)
    if "whole-model" in grid.blocks:
        first = {phase: next(w for w in loads if w[0] == phase) for phase in {w[0] for w in loads}}
        others = grid.other_workload_samples
        for i, shape in enumerate(sample_shapes(space, grid)):
            assert shape.layers is not None and shape.heads and shape.kv_heads and shape.ffn
            for phase, b, s, c in loads:
                if others and i >= others and (phase, b, s, c) != first[phase]:
                    continue  # a workload after its phase's first: only the first ``others`` shapes
                points.append(BlockPoint("whole-model", phase, b, s, c, len(shape.layers), shape.heads, shape.kv_heads,
                                         shape.ffn, dt))
    return points
