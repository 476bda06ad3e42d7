"""Accuracy of subnets on fixed token batches: perplexity for decoders, agreement for encoders.

Decoders are scored by the mean next-token negative log-likelihood (``nll``; perplexity is
``exp(nll)``) on held-out or calibration windows, beside the share of next tokens the subnet's
argmax predicts (``token_accuracy``). Encoders have no labels here, so a subnet is
scored by its agreement with the full model on the same sentences: the cosine between the
mean-pooled sentence embeddings (``loss = 1 - mean cosine``) and the relative hidden-state
error ``||h_sub - h_full||^2 / ||h_full||^2`` over real (non-padding) tokens.

:class:`SubnetEvaluator` caches, per batch, the full model's hidden state at the input of every
layer. A subnet that keeps layers ``0..s-1`` unchanged starts from the cached state at layer
``s`` (the first dropped layer) and runs only the rest: the dynamic program over layers mostly
evaluates such subnets, which halves its cost on average.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.cuts import LayerCut
from nas.families import ModelFamily
from nas.masking import masked_subnet
from nas.shape import ShapeSpace

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Score:
    """A subnet's accuracy on one set of batches; ``loss`` is lower-is-better (what the search uses)."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


class _Inject(nn.Module):
    """Stands in for the first run layer: ignores its input, returns a cached hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert self.value is not None
        return self.value


class SubnetEvaluator:
    """Scores subnets of one base model (dropped layers, masked heads and channels) on fixed batches."""

    def __init__(self, model: nn.Module, family: ModelFamily, space: ShapeSpace, batches: Sequence[Batch]):
        if not batches:
            raise ValueError("SubnetEvaluator needs at least one batch")
        self.model = model
        self.family = family
        self.space = space
        self.batches = list(batches)
        self.layer_inputs: list[list[torch.Tensor]] = []  # [batch][layer] hidden state at the layer's input
        self.reference: list[tuple[torch.Tensor, torch.Tensor]] = []  # encoders: (pooled, last hidden)
        self._cache_full_model()
        self.evaluations = 0
        self.last_embeddings: list[torch.Tensor] = []  # encoders: the pooled embeddings of the last score()

    @property
    def metric(self) -> str:
        return "nll" if self.family.kind == "decoder" else "1-cosine"

    @torch.no_grad()
    def _cache_full_model(self) -> None:
        layers = self.family.layers(self.model)
        for batch in self.batches:
            states: list[torch.Tensor] = []
            handles = [layer.register_forward_pre_hook(_grab_input(states), with_kwargs=True) for layer in layers]
            try:
                out = run(self.model, self.family, batch)
            finally:
                for h in handles:
                    h.remove()
            if self.family.kind == "encoder":
                last = out.last_hidden_state
                states.append(last)
                self.reference.append((mean_pool(last, batch["attention_mask"]), last))
            else:
                states.append(torch.empty(0))  # not needed: the decoder's loss is computed from logits
            self.layer_inputs.append(states)

    def full_score(self) -> Score:
        return self.score(tuple(range(self.space.num_layers)))

    @torch.no_grad()
    def score(self, layers: tuple[int, ...], cuts: list[LayerCut] | None = None, hooks: Any = None) -> Score:
        """Score the subnet keeping ``layers`` (and, with ``cuts``, only their heads and channels).

        ``hooks`` is an optional context manager factory ``hooks(model)`` entered on the base model
        around the masked forward (e.g. bias compensation).
        """
        self.evaluations += 1
        n = self.space.num_layers
        dropped = sorted(set(range(n)) - set(layers))
        start = dropped[0] if dropped and cuts is None else 0
        run_layers = tuple(i for i in layers if i >= start)
        all_layers = self.family.layers(self.model)
        inject = _Inject() if start > 0 else None
        if cuts is None:
            cuts = [LayerCut(i, (), (), ()) for i in run_layers]
            masking = False
        else:
            masking = True
        totals: list[float] = []
        counts: list[float] = []
        errors: list[float] = []
        correct = 0.0
        self.last_embeddings = []
        for b, batch in enumerate(self.batches):
            ctx = hooks(self.model) if hooks is not None else _null()  # hooks see the base model's layers
            with ctx, self._subnet(all_layers, run_layers, start, inject, cuts if masking else None) as model:
                if inject is not None:
                    inject.value = self.layer_inputs[b][start]
                out = run(model, self.family, batch)
            total, count, err, hits = self._batch_loss(b, batch, out)
            totals.append(total)
            counts.append(count)
            errors.append(err)
            correct += hits
        loss = sum(totals) / sum(counts)
        metrics: dict[str, float] = {}
        if self.family.kind == "decoder":
            metrics = {"nll": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": correct / sum(counts)}
        else:
            metrics = {"cosine": 1.0 - loss, "hidden_error": sum(errors) / len(self.batches)}
        return Score(loss, metrics)

    @torch.no_grad()
    def embeddings(self, layers: tuple[int, ...], cuts: list[LayerCut] | None = None, hooks: Any = None) -> torch.Tensor:
        """Encoders: the subnet's mean-pooled sentence embeddings of every row of every batch, (rows, hidden)."""
        if self.family.kind != "encoder":
            raise ValueError("sentence embeddings are an encoder's output")
        self.score(layers, cuts=cuts, hooks=hooks)
        return torch.cat(self.last_embeddings)

    @torch.no_grad()
    def score_model(self, model: nn.Module) -> Score:
        """Score another model (e.g. an extracted checkpoint) on the same batches and references."""
        totals, counts, correct = 0.0, 0.0, 0.0
        self.last_embeddings = []
        for b, batch in enumerate(self.batches):
            total, count, _, hits = self._batch_loss(b, batch, run(model, self.family, batch))
            totals += total
            counts += count
            correct += hits
        loss = totals / counts
        if self.family.kind == "decoder":
            return Score(loss, {"nll": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": correct / counts})
        return Score(loss, {"cosine": 1.0 - loss})

    def _subnet(
        self, all_layers: nn.ModuleList, run: tuple[int, ...], start: int, inject: _Inject | None, cuts: list[LayerCut] | None
    ) -> Any:
        if cuts is not None:
            return masked_subnet(self.model, self.family, self.space, cuts)
        return _skip_layers(self.model, self.family, all_layers, run, start, inject)

    def _batch_loss(self, b: int, batch: Batch, out: Any) -> tuple[float, float, float, float]:
        """``(summed loss, rows or tokens, hidden-state error, correct next tokens)`` of one batch."""
        mask = batch["attention_mask"]
        if self.family.kind == "decoder":
            logits = out.logits[:, :-1]
            target = batch["input_ids"][:, 1:]
            valid = mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits[valid].double(), target[valid], reduction="sum")
            hits = float((logits[valid].argmax(-1) == target[valid]).sum())
            return float(nll), float(valid.sum()), 0.0, hits
        pooled_ref, last_ref = self.reference[b]
        last = out.last_hidden_state
        pooled = mean_pool(last, mask)
        self.last_embeddings.append(pooled)
        cos = torch.nn.functional.cosine_similarity(pooled.double(), pooled_ref.double(), dim=-1)
        valid = mask.bool()
        err = float(((last - last_ref)[valid].double() ** 2).sum() / (last_ref[valid].double() ** 2).sum())
        return float((1.0 - cos).sum()), float(len(cos)), err, 0.0


def run(model: nn.Module, family: ModelFamily, batch: Batch) -> Any:
    """One forward pass; decoders without a KV cache (it would be sized for the base model's layers)."""
    return model(**batch, use_cache=False) if family.kind == "decoder" else model(**batch)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the mean of the hidden states of real tokens. (B, T, D) -> (B, D)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _grab_input(states: list[torch.Tensor]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states.append(args[0] if args else kwargs["hidden_states"])

    return hook


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _skip_layers:
    """Run ``[inject] + layers[run]`` (or just ``layers[run]`` when ``start == 0``); restored on exit."""

    def __init__(
        self, model: nn.Module, family: ModelFamily, all_layers: nn.ModuleList, run: tuple[int, ...], start: int, inject: _Inject | None
    ):
        self.model, self.family, self.all_layers = model, family, all_layers
        self.modules = ([inject] if inject is not None else []) + [all_layers[i] for i in run]
        self.indices = ((start,) if inject is not None else ()) + run
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> nn.Module:
        config = self.model.config
        overrides = self.family.masked_config_overrides(config, self.indices)
        self.saved = {name: getattr(config, name, None) for name in overrides}
        self.family.set_layers(self.model, nn.ModuleList(self.modules))
        for name, value in overrides.items():
            setattr(config, name, value)
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.family.set_layers(self.model, self.all_layers)
        for name, value in self.saved.items():
            setattr(self.model.config, name, value)


def trim_padding(batch: Batch) -> Batch:
    """``batch`` without the padding columns no row of it uses (right padding): the same outputs, less work."""
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2 or not bool((mask[:, :-1] >= mask[:, 1:]).all()):
        return batch  # no mask, or not right-padded: nothing to trim safely
    width = int(mask.sum(dim=1).max())
    return {k: v[:, :width] if v.dim() >= 2 and v.shape[1] == mask.shape[1] else v for k, v in batch.items()}


def iter_batches(inputs: dict[str, torch.Tensor], batch_size: int) -> Iterator[Batch]:
    """Split stacked model inputs into batches of ``batch_size`` rows."""
    n = next(iter(inputs.values())).shape[0]
    for i in range(0, n, batch_size):
        yield {k: v[i : i + batch_size] for k, v in inputs.items()}
