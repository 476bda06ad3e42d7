"""Distillation with the sandwich rule (AmoebaLLM, after BigNAS / OFA), from the frozen base model.

Per step the largest shape, the smallest and ``n`` seeded random shapes are trained. With
``teacher: base`` (the default) every one of them learns from the frozen base model's outputs
(decoders: ``KL(base || shape)`` on next-token distributions; encoders: ``1 - cos`` of mean-pooled
embeddings plus the relative hidden-state error), so the optimum of training is "no worse than
untrained" for every shape; the largest may add the next-token loss (``task_weight``), as far as
the guard of :mod:`nas.finetune.train` lets it. With ``teacher: largest`` (AmoebaLLM's in-place
distillation) the largest trains on the task loss and the students on its detached outputs.

Loss-magnitude balancing scales each student's loss to a reference magnitude,
``loss_i * loss_ref.detach() / loss_i.detach()``: ``largest`` is AmoebaLLM's rule (the largest's
loss; its next-token loss on decoders, whether or not it is trained on), ``mean`` the mean student
loss of the previous step (every student's gradient gets the same scale, and a reference near
zero -- an encoder's largest matching the base it is -- cannot stall the students). Optional
MLFS-style gradient scaling multiplies a subnet's loss by ``(params_full / params_i) ** gamma``
(our reading of MLFS: smaller subnets get larger steps).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.adapters.smol import SMoL, block_params
from nas.cuts import plan_cuts
from nas.families import ModelFamily
from nas.finetune.config import FinetuneConfig
from nas.masking import masked_subnet
from nas.shape import Shape
from nas.supernet.artifact import Supernet
from nas.supernet.evaluate import Batch, mean_pool, run


def balance(loss: torch.Tensor, reference: torch.Tensor | float) -> torch.Tensor:
    """Loss-magnitude balancing: ``loss * reference.detach() / loss.detach()`` (value = reference)."""
    ref = reference.detach() if isinstance(reference, torch.Tensor) else reference
    return loss * ref / loss.detach()


# ---- shapes ----------------------------------------------------------------------------------
def depth_range(supernet: Supernet) -> tuple[int, int]:
    depths = [int(r["depth"]) for r in supernet.depth_tables[supernet.default_depth_table].rows]
    return min(depths), max(depths)


def shape_at(supernet: Supernet, fraction: float) -> Shape:
    """The shape a ``fraction`` (0 = smallest, 1 = largest) of the way along depth and every width choice."""
    lo, hi = depth_range(supernet)
    heads = supernet.space.head_choices()
    ffn = supernet.space.ffn_choices()

    def pick(n: int) -> int:
        return round(fraction * (n - 1))

    h, kv = heads[pick(len(heads))]
    return supernet.resolve_shape({"depth": lo + pick(hi - lo + 1), "heads": h, "kv_heads": kv, "ffn": ffn[pick(len(ffn))]})


def eval_shapes(supernet: Supernet) -> dict[str, Shape]:
    """The shapes the ablation reports: largest, three middle (25/50/75 %), smallest."""
    return {"largest": shape_at(supernet, 1.0), "mid-75": shape_at(supernet, 0.75), "mid-50": shape_at(supernet, 0.5),
            "mid-25": shape_at(supernet, 0.25), "smallest": shape_at(supernet, 0.0)}


class ShapeSampler:
    """Seeded sandwich sampling: largest, smallest, and ``n`` random shapes from the depth table and width choices."""

    def __init__(self, supernet: Supernet, seed: int):
        self.supernet = supernet
        self.rng = random.Random(seed)
        lo, hi = depth_range(supernet)
        self.depths = list(range(lo, hi + 1))
        self.heads = supernet.space.head_choices()
        self.ffn = supernet.space.ffn_choices()
        self.largest = shape_at(supernet, 1.0)
        self.smallest = shape_at(supernet, 0.0)

    def random_shape(self) -> Shape:
        h, kv = self.rng.choice(self.heads)
        return self.supernet.resolve_shape(
            {"depth": self.rng.choice(self.depths), "heads": h, "kv_heads": kv, "ffn": self.rng.choice(self.ffn)})

    def sandwich(self, n: int) -> list[Shape]:
        return [self.largest, self.smallest, *(self.random_shape() for _ in range(n))]

    def state(self) -> Any:
        return self.rng.getstate()

    def set_state(self, state: Any) -> None:
        self.rng.setstate(state)


# ---- losses ----------------------------------------------------------------------------------
def next_token_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    valid = batch["attention_mask"][:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][valid], batch["input_ids"][:, 1:][valid])


def kl_loss(logits: torch.Tensor, teacher: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``KL(teacher || student)`` per predicted token, averaged over real tokens."""
    valid = batch["attention_mask"][:, 1:].bool()
    student = F.log_softmax(logits[:, :-1][valid], dim=-1)
    target = F.log_softmax(teacher[:, :-1][valid], dim=-1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean")


def embedding_loss(hidden: torch.Tensor, target: torch.Tensor, batch: Batch, relation_weight: float = 0.0) -> torch.Tensor:
    """Encoders: ``1 - cos`` of mean-pooled embeddings plus relative hidden MSE over real tokens, plus
    ``relation_weight`` times the mean squared error of the batch's cosine-similarity matrix against
    the base's (what similarity search and clustering read from the embeddings)."""
    mask = batch["attention_mask"]
    student, teacher = mean_pool(hidden, mask), mean_pool(target, mask)
    cos = F.cosine_similarity(student, teacher, dim=-1)
    valid = mask.bool()
    mse = ((hidden - target)[valid] ** 2).sum() / (target[valid] ** 2).sum()
    loss = (1.0 - cos).mean() + mse
    if relation_weight and student.shape[0] > 1:
        s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        loss = loss + relation_weight * ((s @ s.T - t @ t.T) ** 2).mean()
    return loss


# ---- one step --------------------------------------------------------------------------------
@dataclass
class Student:
    """What one forward of one shape needs."""

    shape: Shape
    role: str  # "largest" | "smallest" | "random"


def forward_shape(model: nn.Module, family: ModelFamily, supernet: Supernet, smol: SMoL | None, shape: Shape,
                  batch: Batch, noise: torch.Generator | None) -> torch.Tensor:
    """Logits (decoders) or last hidden states (encoders) of ``shape`` with its unmerged adapters."""
    cuts = plan_cuts(supernet.space, shape, supernet.orders)
    with contextlib.ExitStack() as stack:
        if supernet.bias_compensation:
            from nas.adapters.smol import adapted
            from nas.supernet import width
            from nas.supernet.cut import compensation_shifts

            with adapted(model, family, smol, shape):  # compensation uses the merged weights, as extraction does
                shifts = compensation_shifts(supernet, model, family, cuts)
            stack.enter_context(width.compensated(model, family, shifts))
        if smol is not None:
            stack.enter_context(smol.applied(model, family, shape, noise))
        stack.enter_context(masked_subnet(model, family, supernet.space, cuts))
        out = run(model, family, batch)
    return out.logits if family.kind == "decoder" else out.last_hidden_state


def sandwich_step(model: nn.Module, family: ModelFamily, supernet: Supernet, smol: SMoL, shapes: list[Shape],
                  batch: Batch, base: torch.Tensor, config: FinetuneConfig, noise: torch.Generator | None,
                  previous: Mapping[str, float] | None = None) -> dict[str, float]:
    """Forward and backward of the sandwich ``shapes`` (largest first); gradients accumulate in ``smol``.

    ``base`` is the frozen base model's output of ``batch`` (decoders: logits; encoders: last hidden
    state); ``previous`` the raw losses of the step before (``balance: mean``). Returns the raw
    (unbalanced) loss per role, and decoders' ``largest_task`` (the largest's next-token loss).
    """
    largest, *students = shapes
    decoder = family.kind == "decoder"
    # the largest is the base (routing amplitude 0): nothing to learn, and its output is the base's
    frozen = config.teacher == "base" and smol.amplitude(largest) == 0.0
    out = base if frozen else forward_shape(model, family, supernet, smol, largest, batch, noise)
    losses: dict[str, float] = {}
    if decoder:
        task = next_token_loss(out, batch)
        losses["largest_task"] = task.detach().item()
        if config.teacher == "base":
            loss_ref = kl_loss(out, base, batch) + config.task_weight * task if config.task_weight else kl_loss(out, base, batch)
        else:
            loss_ref = task
        magnitude = task.detach().item()
    else:
        loss_ref = embedding_loss(out, base, batch, config.relation_weight)
        magnitude = loss_ref.detach().item()
    losses["largest"] = loss_ref.detach().item()
    target = base if config.teacher == "base" else out.detach()
    if loss_ref.requires_grad:
        loss_ref.backward()
    reference = {"none": None, "largest": magnitude, "mean": _mean_student(previous)}[config.balance]
    full = block_params(supernet.space, largest)
    for i, shape in enumerate(students):
        out = forward_shape(model, family, supernet, smol, shape, batch, noise)
        loss = kl_loss(out, target, batch) if decoder else embedding_loss(out, target, batch, config.relation_weight)
        value = loss.detach().item()
        losses["smallest" if i == 0 else f"random{i}"] = value
        scaled = loss
        if reference is not None and reference > config.balance_min and value > 0:
            scaled = balance(loss, reference)
        if config.grad_scale == "mlfs":
            scaled = scaled * (full / block_params(supernet.space, shape)) ** config.mlfs_gamma
        if scaled.requires_grad:
            scaled.backward()
    return losses


def _mean_student(previous: Mapping[str, float] | None) -> float | None:
    values = [v for k, v in (previous or {}).items() if k == "smallest" or k.startswith("random")]
    return sum(values) / len(values) if values else None


def mean_losses(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = {k for h in history for k in h}
    return {k: sum(h[k] for h in history if k in h) / sum(1 for h in history if k in h) for k in sorted(keys)}
