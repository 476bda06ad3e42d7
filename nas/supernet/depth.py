"""Which layers to keep at every depth: AmoebaLLM's dynamic program and two baselines.

Dynamic program (AmoebaLLM, Sec. 3.2). With ``N`` layers, ``d[n][m]`` is the best set of ``m``
layers to remove among the last ``n`` layers (all earlier layers kept), scored by the
calibration loss of the model without them. Layer ``N - n`` enters at step ``n``; a cell's
candidates are its sets from ``d[n-1][m]`` (the new layer kept: same set, same score, no new
evaluation) and those of ``d[n-1][m-1]`` plus the new layer (one evaluation each). The greedy
recurrence keeps one set per cell (``beam=1``, about ``N * M`` evaluations); ``beam=k`` keeps the
``k`` best, searching more than greedy for about ``k`` times the cost (``k >= C(N, M)`` is
exhaustive). ``d[N][m]`` gives the layers to keep at depth ``N - m``.

Baselines: drop the last layers; and block influence (ShortGPT), ``BI_i = 1 - cos(x_i, x_{i+1})``
averaged over tokens, where ``x_i`` is the hidden state entering layer ``i``, removing the
least influential layers first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.errors import AnyshapeError

#: A loss of the model with a set of layers removed (lower is better).
RemovalLoss = Callable[[frozenset[int]], float]


@dataclass(frozen=True)
class DepthChoice:
    """The layers kept at one depth, and the calibration loss of that subnet."""

    depth: int
    layers: tuple[int, ...]
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "layers": list(self.layers), "calib_loss": self.loss}


def check_min_depth(min_depth: int, num_layers: int) -> None:
    if isinstance(min_depth, bool) or not isinstance(min_depth, int) or not 1 <= min_depth <= num_layers:
        raise AnyshapeError(f"min_depth is {min_depth!r}; allowed range 1..{num_layers} (the model has {num_layers} layers)")


def dp_layer_selection(
    num_layers: int,
    min_depth: int,
    removal_loss: RemovalLoss,
    *,
    beam: int = 1,
    progress: Callable[[int], Any] | None = None,
) -> list[DepthChoice]:
    """For every depth ``min_depth..num_layers``, the layers to keep (the DP above), deepest last."""
    check_min_depth(min_depth, num_layers)
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise AnyshapeError(f"beam is {beam!r}; must be an integer >= 1 (1 = AmoebaLLM's greedy recurrence)")
    N, M = num_layers, num_layers - min_depth
    memo: dict[frozenset[int], float] = {}

    def loss_of(removed: frozenset[int]) -> float:
        if removed not in memo:
            memo[removed] = float(removal_loss(removed))
        return memo[removed]

    # cells[m]: the best sets (loss, sorted tuple) removing m among the last n layers, best first
    cells: list[list[tuple[float, tuple[int, ...]]]] = [[(loss_of(frozenset()), ())]]
    for n in range(1, N + 1):
        new_layer = N - n
        nxt: list[list[tuple[float, tuple[int, ...]]]] = []
        for m in range(0, min(n, M) + 1):
            candidates = list(cells[m]) if m < len(cells) else []
            if m >= 1:
                for _, removed in cells[m - 1]:
                    grown = (new_layer, *removed)
                    candidates.append((loss_of(frozenset(grown)), grown))
                    if progress is not None:
                        progress(1)
            candidates = sorted(set(candidates))
            nxt.append(candidates[:beam])
        cells = nxt
    choices = []
    for m in range(M, -1, -1):
        loss, removed = cells[m][0]
        kept = tuple(i for i in range(N) if i not in removed)
        choices.append(DepthChoice(N - m, kept, loss))
    return choices


def dp_evaluations(num_layers: int, min_depth: int, beam: int) -> int:
    """An upper bound on the evaluations :func:`dp_layer_selection` makes (for progress bars)."""
    M = num_layers - min_depth
    return sum(beam * min(n, M) for n in range(1, num_layers + 1))


def drop_last(num_layers: int, min_depth: int, removal_loss: RemovalLoss) -> list[DepthChoice]:
    """Baseline: keep the first ``d`` layers."""
    check_min_depth(min_depth, num_layers)
    return [
        DepthChoice(d, tuple(range(d)), float(removal_loss(frozenset(range(d, num_layers)))))
        for d in range(min_depth, num_layers + 1)
    ]


def block_influence(hidden_inputs: Sequence[Sequence[torch.Tensor]], masks: Sequence[torch.Tensor]) -> list[float]:
    """ShortGPT's BI of every layer: ``1 - cos(x_i, x_{i+1})`` averaged over real tokens.

    ``hidden_inputs[b][i]`` is the hidden state entering layer ``i`` for batch ``b``, with one more
    entry (the last layer's output) at the end; ``masks[b]`` marks real tokens.
    """
    num_layers = len(hidden_inputs[0]) - 1
    sums = [0.0] * num_layers
    count = 0.0
    for states, mask in zip(hidden_inputs, masks):
        valid = mask.bool()
        count += float(valid.sum())
        for i in range(num_layers):
            cos = torch.nn.functional.cosine_similarity(states[i][valid].double(), states[i + 1][valid].double(), dim=-1)
            sums[i] += float((1.0 - cos).sum())
    return [s / count for s in sums]


def by_block_influence(influence: Sequence[float], min_depth: int, removal_loss: RemovalLoss) -> list[DepthChoice]:
    """Baseline: at depth ``d``, keep the ``d`` layers with the highest block influence."""
    n = len(influence)
    check_min_depth(min_depth, n)
    ranked = sorted(range(n), key=lambda i: (influence[i], i))  # least influential first
    out = []
    for d in range(min_depth, n + 1):
        removed = frozenset(ranked[: n - d])
        out.append(DepthChoice(d, tuple(i for i in range(n) if i not in removed), float(removal_loss(removed))))
    return out
