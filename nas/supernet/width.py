"""Which heads and FFN channels to keep at every width: importance orders (FLAP) and baselines.

Fluctuation metric (FLAP, An et al. 2024). For an output projection ``W`` (o_proj, down_proj)
with input channels ``x_j``, the importance of channel ``j`` is
``S_j = Var(x_j) * ||W[:, j]||^2``, the variance over calibration tokens times the squared norm
of the column it multiplies: a channel that barely fluctuates can be replaced by its mean.
A head scores the sum over its ``head_dim`` channels; a KV group (grouped-query attention,
see :mod:`nas.shape`) the sum over its query heads. Orders sort scores high to low, so any width
is a prefix of the order.

Bias compensation (FLAP): removing channels ``R`` shifts the output by ``W[:, R] @ x_R``; adding
``W[:, R] @ mean(x_R)`` to the projection's bias recovers its mean. It depends on the width, so
the supernet stores the channel means and the bias is computed at extraction.

Baselines: weight magnitude (the squared L2 norm of every weight row and column a head or
channel owns, in and out projections) and a seeded random order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.cuts import LayerCut, WidthOrders
from nas.families import ModelFamily
from nas.shape import ShapeSpace
from nas.supernet.evaluate import Batch, run

WIDTH_METHODS = ("fluctuation", "magnitude", "random")


@dataclass(frozen=True)
class ChannelStats:
    """Per layer, the mean and variance over calibration tokens of every o_proj / down_proj input channel."""

    attn_mean: torch.Tensor  # (L, H * head_dim)
    attn_var: torch.Tensor  # (L, H * head_dim)
    ffn_mean: torch.Tensor  # (L, F)
    ffn_var: torch.Tensor  # (L, F)


class _Moments:
    def __init__(self, size: int):
        self.total = torch.zeros(size, dtype=torch.float64)
        self.squares = torch.zeros(size, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:  # x: (tokens, C)
        x = x.double()
        self.total += x.sum(0)
        self.squares += (x * x).sum(0)
        self.count += x.shape[0]

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        return mean, (self.squares / self.count - mean * mean).clamp(min=0.0)


@torch.no_grad()
def collect_stats(
    model: nn.Module, family: ModelFamily, space: ShapeSpace, batches: Sequence[Batch], progress: Any = None
) -> ChannelStats:
    """Run the full model over ``batches`` and record the input moments of every output projection."""
    layers = family.layers(model)
    attn = [_Moments(space.num_heads * space.head_dim) for _ in layers]
    ffn = [_Moments(space.ffn_size) for _ in layers]
    valid: list[torch.Tensor] = []

    def hook(moments: _Moments) -> Any:
        def grab(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            moments.add(args[0][valid[0]])

        return grab

    handles = []
    for i, layer in enumerate(layers):
        handles.append(family.attn_out_proj(layer).register_forward_pre_hook(hook(attn[i])))
        handles.append(family.ffn_out_proj(layer).register_forward_pre_hook(hook(ffn[i])))
    try:
        for batch in batches:
            valid[:] = [batch["attention_mask"].bool()]
            run(model, family, batch)
            if progress is not None:
                progress(1)
    finally:
        for h in handles:
            h.remove()
    a = [m.mean_var() for m in attn]
    f = [m.mean_var() for m in ffn]
    return ChannelStats(
        attn_mean=torch.stack([m for m, _ in a]).float(),
        attn_var=torch.stack([v for _, v in a]).float(),
        ffn_mean=torch.stack([m for m, _ in f]).float(),
        ffn_var=torch.stack([v for _, v in f]).float(),
    )


def fluctuation_orders(model: nn.Module, family: ModelFamily, space: ShapeSpace, stats: ChannelStats) -> WidthOrders:
    """FLAP's fluctuation metric ``Var(x_j) * ||W[:, j]||^2`` per channel, summed per head and per KV group."""
    head_scores, ffn_scores = [], []
    for i, layer in enumerate(family.layers(model)):
        o = family.attn_out_proj(layer).weight.detach().double()
        d = family.ffn_out_proj(layer).weight.detach().double()
        attn_channel = stats.attn_var[i].double() * (o * o).sum(0)
        head_scores.append(attn_channel.view(space.num_heads, space.head_dim).sum(1))
        ffn_scores.append(stats.ffn_var[i].double() * (d * d).sum(0))
    return orders_from_scores(space, head_scores, ffn_scores)


def magnitude_orders(model: nn.Module, family: ModelFamily, space: ShapeSpace) -> WidthOrders:
    """Baseline: the squared norm of every weight a head (q rows, o columns) or FFN channel (in rows, out column) owns."""
    H, K, hd = space.num_heads, space.num_kv_heads, space.head_dim
    head_scores, ffn_scores, kv_scores = [], [], []
    for layer in family.layers(model):
        projs = family.attn_in_projs(layer)
        o = family.attn_out_proj(layer).weight.detach().double()
        q_rows = (projs["q"].weight.detach().double() ** 2).sum(1).view(H, hd).sum(1)
        kv_rows = sum(((projs[r].weight.detach().double() ** 2).sum(1).view(K, hd).sum(1) for r in ("k", "v")), torch.zeros(K, dtype=torch.float64))
        heads = q_rows + (o * o).sum(0).view(H, hd).sum(1)
        if K == H:
            heads = heads + kv_rows
        head_scores.append(heads)
        kv_scores.append(heads.view(K, H // K).sum(1) + (0 if K == H else kv_rows))
        d = family.ffn_out_proj(layer).weight.detach().double()
        ffn = (d * d).sum(0)
        for proj in family.ffn_in_projs(layer):
            ffn = ffn + (proj.weight.detach().double() ** 2).sum(1)
        ffn_scores.append(ffn)
    return orders_from_scores(space, head_scores, ffn_scores, kv_scores)


def random_orders(space: ShapeSpace, seed: int) -> WidthOrders:
    """Baseline: a seeded random permutation per layer."""
    gen = torch.Generator().manual_seed(seed)
    heads, kv, ffn = [], [], []
    for _ in range(space.num_layers):
        heads.append(tuple(torch.randperm(space.num_heads, generator=gen).tolist()))
        kv.append(tuple(torch.randperm(space.num_kv_heads, generator=gen).tolist()))
        ffn.append(tuple(torch.randperm(space.ffn_size, generator=gen).tolist()))
    return WidthOrders(tuple(heads), tuple(kv), tuple(ffn))


def orders_from_scores(
    space: ShapeSpace,
    head_scores: Sequence[torch.Tensor],
    ffn_scores: Sequence[torch.Tensor],
    kv_scores: Sequence[torch.Tensor] | None = None,
) -> WidthOrders:
    """Sort scores high to low (ties: lower index first). KV groups default to the sum of their heads."""
    g = space.group_size
    if kv_scores is None:
        kv_scores = [s.view(space.num_kv_heads, g).sum(1) for s in head_scores]
    return WidthOrders(
        heads=tuple(_order(s) for s in head_scores),
        kv_heads=tuple(_order(s) for s in kv_scores),
        ffn=tuple(_order(s) for s in ffn_scores),
    )


def _order(scores: torch.Tensor) -> tuple[int, ...]:
    return tuple(torch.sort(scores.double(), descending=True, stable=True).indices.tolist())


def compensation_biases(
    model: nn.Module, family: ModelFamily, space: ShapeSpace, cuts: Sequence[LayerCut], stats: ChannelStats
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per kept base layer: the bias shifts ``W[:, R] @ mean(x_R)`` of o_proj and down_proj for the removed ``R``."""
    layers = family.layers(model)
    out = {}
    for cut in cuts:
        layer = layers[cut.layer]
        attn_removed = _removed(cut.rows("q", space.head_dim), space.num_heads * space.head_dim)
        ffn_removed = _removed(cut.rows("ffn", 0), space.ffn_size)
        o = family.attn_out_proj(layer).weight.detach()
        d = family.ffn_out_proj(layer).weight.detach()
        attn_shift = o[:, attn_removed] @ stats.attn_mean[cut.layer, attn_removed].to(o.dtype)
        ffn_shift = d[:, ffn_removed] @ stats.ffn_mean[cut.layer, ffn_removed].to(d.dtype)
        out[cut.layer] = (attn_shift, ffn_shift)
    return out


def _removed(kept: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


@contextlib.contextmanager
def compensated(
    model: nn.Module, family: ModelFamily, shifts: dict[int, tuple[torch.Tensor, torch.Tensor]]
) -> Iterator[nn.Module]:
    """Within the block, o_proj / down_proj of the given base layers add their compensation shifts."""
    layers = family.layers(model)
    handles = []
    try:
        for index, (attn_shift, ffn_shift) in shifts.items():
            handles.append(family.attn_out_proj(layers[index]).register_forward_hook(_add(attn_shift)))
            handles.append(family.ffn_out_proj(layers[index]).register_forward_hook(_add(ffn_shift)))
        yield model
    finally:
        for h in handles:
            h.remove()


def _add(shift: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output + shift.to(output.dtype)

    return hook
