"""Configs of supernet fine-tuning: the training run, and the adapter's (:mod:`nas.adapters.config`).

Both are dataclasses validated at construction; both round-trip through ``to_dict`` /
``from_dict`` (the adapter config is recorded in ``supernet.json``, the training config in
every checkpoint so that ``--resume`` refuses a changed run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nas.adapters.config import AdapterConfig, check_float, check_int
from nas.errors import AnyshapeError

GRAD_SCALES = ("none", "mlfs")
#: What the students (smallest + random shapes) learn from: the frozen base model's outputs, or the
#: largest shape's detached outputs of the same step (AmoebaLLM's in-place distillation).
TEACHERS = ("base", "largest")
#: Loss-magnitude balancing: none; to the largest's loss (AmoebaLLM: ``loss_i * loss_ref / loss_i``,
#: ``loss_ref`` the largest's task loss where it has one); or to the mean student loss of the step before.
BALANCES = ("none", "largest", "mean")
#: Learning-rate schedules over the run (by steps, or by time where ``max_minutes`` ends it sooner).
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class FinetuneConfig:
    """One distillation run (sandwich rule) over a supernet, with its guard."""

    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    max_minutes: float = field(default=0.0, metadata={"help": "wall-clock budget of the training loop (0 = none): "
                                                              "training stops there as if its steps were done"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate of adapters and gate"})
    lr_schedule: str = field(default="cosine", metadata={"help": f"one of {LR_SCHEDULES}: cosine warms up linearly over "
                                                                 "`warmup` of the run, then decays to `min_lr_ratio` x lr"})
    warmup: float = field(default=0.05, metadata={"help": "share of the run (steps, or time under max_minutes) spent warming up"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine: the last step's learning rate over the peak"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "sequences (decoders) or sentences (encoders) per step"})
    num_train: int = field(default=256, metadata={"help": "training sequences drawn from the calibration pool"})
    seq_len: int = field(default=0, metadata={"help": "tokens per sequence; 0 = the supernet's calibration seq_len"})
    data: str | None = field(default=None, metadata={"help": "training text: a builtin corpus name (stdlib-docs, english) or a "
                                                             "text / JSON-lines file or folder; default the builtin corpus"})
    short_spans: float = field(default=0.5, metadata={"help": "encoders: share of the training sentences cut to a span of "
                                                              "1-32 words, so that word and query embeddings are distilled too"})
    relation_weight: float = field(default=1.0, metadata={"help": "encoders: weight of the relational loss (squared error of "
                                                                  "the batch's cosine-similarity matrix against the base's)"})
    num_random: int = field(default=2, metadata={"help": "random shapes per step besides the largest and smallest (n)"})
    teacher: str = field(default="base", metadata={"help": f"one of {TEACHERS}: what the students distill from"})
    task_weight: float = field(default=0.0, metadata={"help": "decoders, teacher base: weight of the next-token loss "
                                                              "added to the largest's distillation loss"})
    balance: str = field(default="largest", metadata={"help": f"one of {BALANCES}: loss-magnitude balancing of the students"})
    balance_min: float = field(default=1e-6, metadata={"help": "no balancing in a step whose reference loss is below this"})
    grad_scale: str = field(default="none", metadata={"help": f"one of {GRAD_SCALES}: MLFS gradient scaling of small subnets"})
    mlfs_gamma: float = field(default=0.5, metadata={"help": "MLFS: subnet loss times (params_full / params_i) ** gamma"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = none)"})
    seed: int = field(default=0, metadata={"help": "seed of adapter init, data order, shape sampling and gate noise"})
    checkpoint_every: int = field(default=50, metadata={"help": "steps between checkpoints (0 = none)"})
    guard: bool = field(default=True, metadata={"help": "validate the eval shapes during training; keep the best state "
                                                        "in which no shape is worse than untrained, stop when none is"})
    num_val: int = field(default=32, metadata={"help": "validation sequences / sentences of the guard (never trained on)"})
    eval_every: int = field(default=0, metadata={"help": "steps between guard validations (0 = a tenth of the steps, >= 10)"})
    patience: int = field(default=2, metadata={"help": "guard: stop after this many validations in a row with a worse shape"})
    guard_tolerance: float = field(default=1e-3, metadata={"help": "guard: a shape is worse when its validation loss (nll, "
                                                                   "or 1 - cosine) rises by more than this"})
    guard_tasks: tuple[str, ...] = field(default=(), metadata={"help": "encoders: task files (pairs:FILE, labels:FILE) the guard "
                                                                       "also validates every eval shape on"})
    guard_task_tolerance: float = field(default=0.01, metadata={"help": "guard: a shape is worse when a task score falls "
                                                                        "by more than this"})

    def __post_init__(self) -> None:
        if isinstance(self.adapter, Mapping):
            object.__setattr__(self, "adapter", AdapterConfig.from_dict(self.adapter))
        if isinstance(self.balance, bool):  # configs before 2026-12: balance on / off
            object.__setattr__(self, "balance", "largest" if self.balance else "none")
        if self.teacher not in TEACHERS:
            raise AnyshapeError(f"finetune teacher is {self.teacher!r}; allowed: {', '.join(TEACHERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AnyshapeError(f"finetune lr_schedule is {self.lr_schedule!r}; allowed: {', '.join(LR_SCHEDULES)}")
        check_float("finetune", "warmup", self.warmup, 0.0, 0.5)
        check_float("finetune", "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        if self.balance not in BALANCES:
            raise AnyshapeError(f"finetune balance is {self.balance!r}; allowed: {', '.join(BALANCES)}")
        check_float("finetune", "task_weight", self.task_weight, 0.0, 1e3)
        if not isinstance(self.guard, bool):
            raise AnyshapeError(f"finetune guard is {self.guard!r}; it must be true or false")
        check_int("finetune", "num_val", self.num_val, 1, 100_000)
        check_int("finetune", "eval_every", self.eval_every, 0, 10_000_000)
        check_int("finetune", "patience", self.patience, 1, 1000)
        check_float("finetune", "guard_tolerance", self.guard_tolerance, 0.0, 1e3)
        check_float("finetune", "guard_task_tolerance", self.guard_task_tolerance, 0.0, 2.0)
        if isinstance(self.guard_tasks, str) or not all(isinstance(t, str) for t in self.guard_tasks):
            raise AnyshapeError(f"finetune guard_tasks is {self.guard_tasks!r}; give a list of pairs:FILE / labels:FILE")
        object.__setattr__(self, "guard_tasks", tuple(self.guard_tasks))
        if self.guard_tasks and not self.guard:
            raise AnyshapeError("guard tasks need the guard; drop --no-guard or the --guard-task options")
        check_int("finetune", "steps", self.steps, 0, 10_000_000)
        check_float("finetune", "max_minutes", self.max_minutes, 0.0, 1e6)
        check_float("finetune", "lr", self.lr, 0.0, 10.0)
        check_float("finetune", "weight_decay", self.weight_decay, 0.0, 10.0)
        check_int("finetune", "batch_size", self.batch_size, 1, 4096)
        check_int("finetune", "num_train", self.num_train, 1, 10_000_000)
        if self.seq_len != 0:
            check_int("finetune", "seq_len", self.seq_len, 8, 8192)
        check_int("finetune", "num_random", self.num_random, 0, 64)
        check_float("finetune", "short_spans", self.short_spans, 0.0, 1.0)
        check_float("finetune", "relation_weight", self.relation_weight, 0.0, 1e3)
        check_float("finetune", "balance_min", self.balance_min, 0.0, 1e6)
        if self.grad_scale not in GRAD_SCALES:
            raise AnyshapeError(f"finetune grad_scale is {self.grad_scale!r}; allowed: {', '.join(GRAD_SCALES)}")
        check_float("finetune", "mlfs_gamma", self.mlfs_gamma, 0.0, 10.0)
        check_float("finetune", "max_grad_norm", self.max_grad_norm, 0.0, 1e6)
        check_int("finetune", "seed", self.seed, 0, 2**63 - 1)
        check_int("finetune", "checkpoint_every", self.checkpoint_every, 0, 10_000_000)

    def lr_at(self, progress: float) -> float:
        """The learning rate once ``progress`` (0..1: steps done, or time spent, whichever is further) of the run is done."""
        if self.lr_schedule == "constant":
            return self.lr
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return self.lr * progress / self.warmup
        decay = (progress - self.warmup) / (1.0 - self.warmup)
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * decay)))

    @property
    def validation_interval(self) -> int:
        """Steps between guard validations."""
        return self.eval_every or max(10, self.steps // 10)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AnyshapeError(f"finetune config has unknown fields {unknown}")
        # a record without these fields was trained without them
        return cls(**{"short_spans": 0.0, "relation_weight": 0.0, "lr_schedule": "constant", **dict(data)})
