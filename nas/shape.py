"""Subnet shapes and the shape space of a base model.

A shape is the base layers kept (``layers``, in order) and the widths every kept layer
keeps: query ``heads``, ``kv_heads`` (grouped-query attention) and ``ffn`` channels.
Widths are uniform across kept layers, because that is what stock runtimes load; *which*
heads and channels each layer keeps comes from width orders (see :mod:`nas.cuts`).

Grouped-query attention. A base model with ``H`` query heads and ``K`` KV heads has
``K`` groups of ``g = H / K`` query heads sharing one KV head. A shape keeps
``kv_heads`` whole KV groups and, in each, the same number ``heads / kv_heads`` of their
query heads. So ``kv_heads`` is in ``1..K``, ``heads`` is a multiple of ``kv_heads`` and
at most ``kv_heads * g``. The default, when ``kv_heads`` is omitted, cuts whole KV groups
(``heads / g`` groups, every query head of each), which keeps the base model's ratio; keeping
all groups and fewer query heads per group is the other end of the same rule. Any other
choice (query heads spread unevenly over groups) is not loadable by stock runtimes and is
rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nas.errors import AnyshapeError


@dataclass(frozen=True)
class ShapeSpace:
    """What a base model allows: its full sizes and which widths can be cut."""

    family: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    ffn_size: int
    heads_cuttable: bool = True
    heads_note: str = ""
    #: If set, ``heads`` must divide this number (stock LlamaConfig requires hidden_size % heads == 0).
    heads_divide: int = 0

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def full_shape(self) -> Shape:
        return Shape(
            layers=tuple(range(self.num_layers)),
            heads=self.num_heads,
            kv_heads=self.num_kv_heads,
            ffn=self.ffn_size,
        )

    def head_choices(self) -> list[tuple[int, int]]:
        """Every allowed ``(heads, kv_heads)`` pair, smallest first."""
        if not self.heads_cuttable:
            return [(self.num_heads, self.num_kv_heads)]
        pairs = [
            (kv * q, kv) for kv in range(1, self.num_kv_heads + 1) for q in range(1, self.group_size + 1)
        ]
        return sorted(p for p in pairs if not self.heads_divide or self.heads_divide % p[0] == 0)

    def ffn_choices(self, steps: int = 8) -> list[int]:
        """A default FFN grid: ``steps`` even fractions of the full size, multiples of 8 where possible."""
        choices = set()
        for k in range(1, steps + 1):
            value = self.ffn_size * k / steps
            rounded = round(value / 8) * 8 if self.ffn_size >= 8 * steps else round(value)
            choices.add(min(max(rounded, 1), self.ffn_size))
        return sorted(choices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "ffn_size": self.ffn_size,
            "heads_cuttable": self.heads_cuttable,
            "heads_divide": self.heads_divide,
            "depth_range": [1, self.num_layers],
            "head_choices": [list(p) for p in self.head_choices()],
            "ffn_range": [1, self.ffn_size],
            "ffn_grid": self.ffn_choices(),
        }


@dataclass(frozen=True)
class Shape:
    """A subnet shape; ``None`` means "all" (layers) or "full width" (heads, kv_heads, ffn).

    ``resolve`` fills the blanks from a :class:`ShapeSpace` and validates every field.
    """

    layers: tuple[int, ...] | None = None
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def depth(self) -> int | None:
        return None if self.layers is None else len(self.layers)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shape:
        if not isinstance(data, Mapping):
            raise AnyshapeError(f"shape must be a mapping like {{'layers': [0, 1], 'ffn': 512}}, got {data!r}")
        known = {"layers", "heads", "kv_heads", "ffn"}
        unknown = sorted(set(data) - known - {"depth"})
        if unknown:
            raise AnyshapeError(f"shape has unknown field(s) {unknown}; allowed: layers, depth, heads, kv_heads, ffn")
        layers = data.get("layers")
        if layers is not None:
            if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
                raise AnyshapeError(f"shape.layers must be a list of layer indices, got {layers!r}")
            layers = tuple(_as_int("layers[]", v) for v in layers)
        extra = {"depth": data["depth"]} if "depth" in data else {}
        return cls(
            layers=layers,
            heads=_opt_int("heads", data.get("heads")),
            kv_heads=_opt_int("kv_heads", data.get("kv_heads")),
            ffn=_opt_int("ffn", data.get("ffn")),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.layers is not None:
            out["layers"] = list(self.layers)
        out.update(self.extra)
        for name in ("heads", "kv_heads", "ffn"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def resolve(self, space: ShapeSpace) -> Shape:
        """Return the complete shape (no ``None``) or raise naming the field and its allowed range."""
        if "depth" in self.extra:
            raise AnyshapeError(
                "shape.depth needs a supernet to pick the layers (pass --supernet DIR), "
                "or give shape.layers explicitly"
            )
        n = space.num_layers
        layers = tuple(range(n)) if self.layers is None else self.layers
        if len(layers) == 0:
            raise AnyshapeError(f"shape.layers is empty (depth 0); depth must be in 1..{n}")
        for i in layers:
            if not 0 <= i < n:
                raise AnyshapeError(f"shape.layers contains {i}; layer indices must be in 0..{n - 1}")
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise AnyshapeError(f"shape.layers must be strictly increasing with no repeats, got {list(layers)}")

        heads, kv_heads = self._resolve_heads(space)

        ffn = space.ffn_size if self.ffn is None else self.ffn
        if not 1 <= ffn <= space.ffn_size:
            raise AnyshapeError(f"shape.ffn is {ffn}; allowed range 1..{space.ffn_size}")
        return Shape(layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn)

    def _resolve_heads(self, space: ShapeSpace) -> tuple[int, int]:
        heads, kv = self._resolve_head_groups(space)
        if space.heads_divide and space.heads_divide % heads:
            allowed = sorted({h for h, _ in space.head_choices()})
            raise AnyshapeError(
                f"shape.heads is {heads}; {space.family} configs require hidden_size ({space.heads_divide}) "
                f"to be a multiple of the number of heads; allowed heads: {', '.join(map(str, allowed))}"
            )
        return heads, kv

    def _resolve_head_groups(self, space: ShapeSpace) -> tuple[int, int]:
        H, K, g = space.num_heads, space.num_kv_heads, space.group_size
        heads = H if self.heads is None else self.heads
        if not space.heads_cuttable:
            if heads != H or self.kv_heads not in (None, K):
                raise AnyshapeError(f"shape.heads is {heads}; {space.heads_note or 'heads cannot be cut'}; allowed: {H}")
            return H, K
        if not 1 <= heads <= H:
            raise AnyshapeError(f"shape.heads is {heads}; allowed range 1..{H}")
        if self.kv_heads is None:
            if K == H:
                return heads, heads
            if heads % g:
                raise AnyshapeError(
                    f"shape.heads is {heads}, not a whole number of KV groups ({K} groups of {g} query heads); "
                    f"give a multiple of {g}, or set shape.kv_heads (1..{K}) with heads a multiple of it"
                )
            return heads, heads // g
        kv = self.kv_heads
        if not 1 <= kv <= K:
            raise AnyshapeError(f"shape.kv_heads is {kv}; allowed range 1..{K}")
        if heads % kv or heads // kv > g:
            allowed = ", ".join(str(kv * q) for q in range(1, g + 1))
            raise AnyshapeError(
                f"shape.heads is {heads} with kv_heads {kv}; each kept KV group keeps the same number of its "
                f"{g} query heads, so heads must be one of {allowed}"
            )
        return heads, kv


def _opt_int(name: str, value: Any) -> int | None:
    return None if value is None else _as_int(name, value)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise AnyshapeError(f"shape.{name} must be an integer, got {value!r}")
    return value
