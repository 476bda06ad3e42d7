"""A supernet's shape as the search and the evaluation see it: merged adapters, then bias compensation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from nas.adapters.smol import SMoL, adapted
from nas.cuts import LayerCut, plan_cuts
from nas.families import ModelFamily
from nas.shape import Shape


def shape_hooks(supernet: Any, family: ModelFamily, smol: SMoL | None, shape: Shape,
                cuts: list[LayerCut]) -> Callable[[nn.Module], contextlib.AbstractContextManager[nn.Module]] | None:
    """A ``hooks(model)`` factory for :meth:`SubnetEvaluator.score`, or None when there is nothing to add.

    Adapters (a trained supernet) are merged into the weights for ``shape``; bias compensation is
    computed from those merged weights, exactly as :func:`nas.supernet.cut.extract_from_supernet` does.
    """
    if smol is None and not supernet.bias_compensation:
        return None

    @contextlib.contextmanager
    def hooks(model: nn.Module) -> Iterator[nn.Module]:
        with adapted(model, family, smol, shape), contextlib.ExitStack() as stack:
            if supernet.bias_compensation:
                from nas.supernet import width
                from nas.supernet.cut import compensation_shifts

                stack.enter_context(width.compensated(model, family, compensation_shifts(supernet, model, family, cuts)))
            yield model

    return hooks


def subnet_of(supernet: Any, family: ModelFamily, smol: SMoL | None,
              shape: Shape) -> tuple[tuple[int, ...], list[LayerCut], Callable[[nn.Module], Any] | None]:
    """What :meth:`SubnetEvaluator.score` needs to run ``shape`` as the supernet defines it: its
    layers, its cuts, and the hooks of :func:`shape_hooks`."""
    assert shape.layers is not None
    cuts = plan_cuts(supernet.space, shape, supernet.orders)
    return tuple(shape.layers), cuts, shape_hooks(supernet, family, smol, shape, cuts)
