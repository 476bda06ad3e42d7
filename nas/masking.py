"""Run a base model as if it were a subnet: skip dropped layers, zero dropped heads and channels.

This is the supernet's own forward: the same function as the physically extracted model
(the equivalence the tests check), without copying weights. Dropped heads are zeroed at
the input of the attention output projection, dropped FFN channels at the input of the
FFN output projection; that is exactly what removing them does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from nas.cuts import LayerCut
from nas.families import ModelFamily
from nas.shape import ShapeSpace


@contextlib.contextmanager
def masked_subnet(model: nn.Module, family: ModelFamily, space: ShapeSpace, cuts: list[LayerCut]) -> Iterator[nn.Module]:
    """Within the block, ``model`` computes the subnet given by ``cuts``; restored on exit."""
    all_layers = family.layers(model)
    kept = nn.ModuleList([all_layers[cut.layer] for cut in cuts])
    config = model.config
    layers = tuple(cut.layer for cut in cuts)
    overrides = family.masked_config_overrides(config, layers)
    saved = {name: getattr(config, name, None) for name in overrides}
    handles = []
    try:
        for cut, layer in zip(cuts, kept):
            handles.append(family.attn_out_proj(layer).register_forward_pre_hook(_zero_hook(cut.rows("q", space.head_dim), space.num_heads * space.head_dim)))
            handles.append(family.ffn_out_proj(layer).register_forward_pre_hook(_zero_hook(cut.rows("ffn", 0), space.ffn_size)))
        family.set_layers(model, kept)
        for name, value in overrides.items():
            setattr(config, name, value)
        yield model
    finally:
        for handle in handles:
            handle.remove()
        family.set_layers(model, all_layers)
        for name, value in saved.items():
            setattr(config, name, value)


def _zero_hook(keep: torch.Tensor, size: int) -> Any:
    mask = torch.zeros(size)
    mask[keep] = 1.0
    if bool(mask.all()):
        return lambda module, args: None

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        return (x * mask.to(dtype=x.dtype, device=x.device), *args[1:])

    return hook
