"""Configs of supernet fine-tuning: the adapter (SMoL / single LoRA / none) and the training run.

Both are dataclasses validated at construction; both round-trip through ``to_dict`` /
``from_dict`` (the adapter config is recorded in ``supernet.json``, the training config in
every checkpoint so that ``--resume`` refuses a changed run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nas.errors import AnyshapeError

ADAPTER_MODES = ("smol", "single", "none")
GRAD_SCALES = ("none", "mlfs")


def _check_int(owner: str, name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AnyshapeError(f"{owner} {name} is {value!r}; allowed range {low}..{high}")


def _check_float(owner: str, name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise AnyshapeError(f"{owner} {name} is {value!r}; allowed range {low}..{high}")


@dataclass(frozen=True)
class AdapterConfig:
    """SMoL (AmoebaLLM): K LoRA experts per linear layer, a shape-only gate with top-k routing."""

    mode: str = field(default="smol", metadata={"help": f"one of {ADAPTER_MODES}: mixture, one shared LoRA, or none"})
    num_experts: int = field(default=5, metadata={"help": "LoRA experts per linear layer (K); 1 for mode single"})
    rank: int = field(default=8, metadata={"help": "LoRA rank r of every expert"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scale numerator: delta = alpha / r * B A"})
    top_k: int = field(default=2, metadata={"help": "experts mixed per layer (top-k of the gate's logits)"})
    gate_hidden: int = field(default=64, metadata={"help": "hidden units of the gate MLP"})
    gate_noise: float = field(default=1.0, metadata={"help": "std of the gate's logit noise, in training only (0 = none)"})

    def __post_init__(self) -> None:
        if self.mode not in ADAPTER_MODES:
            raise AnyshapeError(f"adapter mode is {self.mode!r}; allowed: {', '.join(ADAPTER_MODES)}")
        _check_int("adapter", "num_experts", self.num_experts, 1, 64)
        _check_int("adapter", "rank", self.rank, 1, 1024)
        _check_int("adapter", "top_k", self.top_k, 1, self.num_experts)
        _check_int("adapter", "gate_hidden", self.gate_hidden, 1, 4096)
        _check_float("adapter", "alpha", self.alpha, 1e-6, 1e6)
        _check_float("adapter", "gate_noise", self.gate_noise, 0.0, 100.0)
        if self.mode == "single" and (self.num_experts != 1 or self.top_k != 1):
            raise AnyshapeError("adapter mode 'single' is one shared LoRA: num_experts and top_k must be 1 "
                                "(use AdapterConfig.single())")

    @classmethod
    def single(cls, rank: int = 8, alpha: float = 16.0) -> AdapterConfig:
        return cls(mode="single", num_experts=1, rank=rank, alpha=alpha, top_k=1, gate_noise=0.0)

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AnyshapeError(f"adapter config has unknown fields {unknown}")
        return cls(**dict(data))


@dataclass(frozen=True)
class FinetuneConfig:
    """One in-place distillation run (sandwich rule) over a supernet."""

    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of adapters and gate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "sequences (decoders) or sentences (encoders) per step"})
    num_train: int = field(default=256, metadata={"help": "training sequences drawn from the calibration pool"})
    seq_len: int = field(default=0, metadata={"help": "tokens per sequence; 0 = the supernet's calibration seq_len"})
    data: str | None = field(default=None, metadata={"help": "plain-text training file (paragraphs); default builtin corpus"})
    num_random: int = field(default=2, metadata={"help": "random shapes per step besides the largest and smallest (n)"})
    balance: bool = field(default=True, metadata={"help": "loss-magnitude balancing: loss_i * loss_ref / loss_i.detach()"})
    balance_min: float = field(default=1e-6, metadata={"help": "no balancing in a step whose reference loss is below this"})
    grad_scale: str = field(default="none", metadata={"help": f"one of {GRAD_SCALES}: MLFS gradient scaling of small subnets"})
    mlfs_gamma: float = field(default=0.5, metadata={"help": "MLFS: subnet loss times (params_full / params_i) ** gamma"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = none)"})
    seed: int = field(default=0, metadata={"help": "seed of adapter init, data order, shape sampling and gate noise"})
    checkpoint_every: int = field(default=50, metadata={"help": "steps between checkpoints (0 = none)"})

    def __post_init__(self) -> None:
        if isinstance(self.adapter, Mapping):
            object.__setattr__(self, "adapter", AdapterConfig.from_dict(self.adapter))
        _check_int("finetune", "steps", self.steps, 0, 10_000_000)
        _check_float("finetune", "lr", self.lr, 0.0, 10.0)
        _check_float("finetune", "weight_decay", self.weight_decay, 0.0, 10.0)
        _check_int("finetune", "batch_size", self.batch_size, 1, 4096)
        _check_int("finetune", "num_train", self.num_train, 1, 10_000_000)
        if self.seq_len != 0:
            _check_int("finetune", "seq_len", self.seq_len, 8, 8192)
        _check_int("finetune", "num_random", self.num_random, 0, 64)
        _check_float("finetune", "balance_min", self.balance_min, 0.0, 1e6)
        if self.grad_scale not in GRAD_SCALES:
            raise AnyshapeError(f"finetune grad_scale is {self.grad_scale!r}; allowed: {', '.join(GRAD_SCALES)}")
        _check_float("finetune", "mlfs_gamma", self.mlfs_gamma, 0.0, 10.0)
        _check_float("finetune", "max_grad_norm", self.max_grad_norm, 0.0, 1e6)
        _check_int("finetune", "seed", self.seed, 0, 2**63 - 1)
        _check_int("finetune", "checkpoint_every", self.checkpoint_every, 0, 10_000_000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AnyshapeError(f"finetune config has unknown fields {unknown}")
        return cls(**dict(data))
