"""Which heads and channels each kept layer keeps: width orders and per-layer cuts.

A :class:`WidthOrders` ranks, per base layer, the query heads, the KV heads (groups) and
the FFN channels, most important first, so that any width is a prefix. Without a supernet
the orders are the identity (the first heads and channels in index order).
:func:`plan_cuts` turns a resolved shape and orders into exact base indices per kept layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.errors import AnyshapeError
from nas.shape import Shape, ShapeSpace


@dataclass(frozen=True)
class WidthOrders:
    """Per base layer: query-head, KV-head and FFN-channel rankings (permutations)."""

    heads: tuple[tuple[int, ...], ...]
    kv_heads: tuple[tuple[int, ...], ...]
    ffn: tuple[tuple[int, ...], ...]

    @classmethod
    def identity(cls, space: ShapeSpace) -> WidthOrders:
        n = space.num_layers
        return cls(
            heads=(tuple(range(space.num_heads)),) * n,
            kv_heads=(tuple(range(space.num_kv_heads)),) * n,
            ffn=(tuple(range(space.ffn_size)),) * n,
        )

    def validate(self, space: ShapeSpace) -> None:
        for name, orders, size in (
            ("heads", self.heads, space.num_heads),
            ("kv_heads", self.kv_heads, space.num_kv_heads),
            ("ffn", self.ffn, space.ffn_size),
        ):
            if len(orders) != space.num_layers:
                raise AnyshapeError(f"width orders for {name} cover {len(orders)} layers, the model has {space.num_layers}")
            for layer, order in enumerate(orders):
                if sorted(order) != list(range(size)):
                    raise AnyshapeError(f"width order for {name} of layer {layer} is not a permutation of 0..{size - 1}")

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "orders.heads": torch.tensor(self.heads, dtype=torch.int64),
            "orders.kv_heads": torch.tensor(self.kv_heads, dtype=torch.int64),
            "orders.ffn": torch.tensor(self.ffn, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> WidthOrders:
        def rows(t: torch.Tensor) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(int(v) for v in row) for row in t.tolist())

        return cls(rows(tensors["orders.heads"]), rows(tensors["orders.kv_heads"]), rows(tensors["orders.ffn"]))


@dataclass(frozen=True)
class LayerCut:
    """The exact base indices one kept layer keeps.

    ``heads`` is arranged group by group, so that new query head ``i`` uses new KV head
    ``i // (len(heads) // len(kv_heads))``, as grouped-query attention requires.
    """

    layer: int
    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def rows(self, axis: str, head_dim: int) -> torch.Tensor:
        """Indices along a tensor dimension cut by ``axis`` ("q", "kv" or "ffn")."""
        if axis == "ffn":
            return torch.tensor(self.ffn, dtype=torch.int64)
        heads = self.heads if axis == "q" else self.kv_heads
        base = torch.tensor(heads, dtype=torch.int64)[:, None] * head_dim
        return (base + torch.arange(head_dim)).reshape(-1)

    def to_dict(self) -> dict[str, Any]:
        return {"base_layer": self.layer, "heads": list(self.heads), "kv_heads": list(self.kv_heads), "ffn": list(self.ffn)}


def plan_cuts(space: ShapeSpace, shape: Shape, orders: WidthOrders | None = None) -> list[LayerCut]:
    """Per kept layer, the base heads, KV heads and FFN channels a resolved ``shape`` keeps."""
    if shape.layers is None or shape.heads is None or shape.kv_heads is None or shape.ffn is None:
        shape = shape.resolve(space)
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    orders = orders or WidthOrders.identity(space)
    g = space.group_size
    per_group = shape.heads // shape.kv_heads
    cuts = []
    for layer in shape.layers:
        if g == 1:
            heads = tuple(sorted(orders.heads[layer][: shape.heads]))
            kv_heads = heads
        else:
            kv_heads = tuple(sorted(orders.kv_heads[layer][: shape.kv_heads]))
            heads = tuple(h for group in kv_heads for h in _top_in_group(orders.heads[layer], group, g, per_group))
        ffn = tuple(sorted(orders.ffn[layer][: shape.ffn]))
        cuts.append(LayerCut(layer, heads, kv_heads, ffn))
    return cuts


def _top_in_group(head_order: Sequence[int], group: int, group_size: int, keep: int) -> list[int]:
    members = range(group * group_size, (group + 1) * group_size)
    rank = {h: i for i, h in enumerate(head_order)}
    return sorted(sorted(members, key=rank.__getitem__)[:keep])
