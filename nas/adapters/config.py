"""The adapter config: SMoL (a shape-aware mixture of LoRA experts), one shared LoRA, or none.

Recorded in ``supernet.json``; round-trips through ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nas.errors import AnyshapeError

ADAPTER_MODES = ("smol", "single", "none")


def check_int(owner: str, name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AnyshapeError(f"{owner} {name} is {value!r}; allowed range {low}..{high}")


def check_float(owner: str, name: str, value: Any, low: float, high: float) -> None:
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
    full_is_base: bool = field(default=True, metadata={"help": "scale a shape's mixture by 1 - params(shape) / params(full): "
                                                               "the full shape stays the base model exactly"})

    def __post_init__(self) -> None:
        if self.mode not in ADAPTER_MODES:
            raise AnyshapeError(f"adapter mode is {self.mode!r}; allowed: {', '.join(ADAPTER_MODES)}")
        check_int("adapter", "num_experts", self.num_experts, 1, 64)
        check_int("adapter", "rank", self.rank, 1, 1024)
        check_int("adapter", "top_k", self.top_k, 1, self.num_experts)
        check_int("adapter", "gate_hidden", self.gate_hidden, 1, 4096)
        check_float("adapter", "alpha", self.alpha, 1e-6, 1e6)
        check_float("adapter", "gate_noise", self.gate_noise, 0.0, 100.0)
        if not isinstance(self.full_is_base, bool):
            raise AnyshapeError(f"adapter full_is_base is {self.full_is_base!r}; it must be true or false")
        if self.mode == "single" and (self.num_experts != 1 or self.top_k != 1):
            raise AnyshapeError("adapter mode 'single' is one shared LoRA: num_experts and top_k must be 1 "
                                "(use AdapterConfig.single())")

    @classmethod
    def single(cls, rank: int = 8, alpha: float = 16.0, full_is_base: bool = True) -> AdapterConfig:
        return cls(mode="single", num_experts=1, rank=rank, alpha=alpha, top_k=1, gate_noise=0.0, full_is_base=full_is_base)

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
        return cls(**{"full_is_base": False, **dict(data)})  # a record without the field was trained without it
