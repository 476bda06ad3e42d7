"""Workloads: a latency is always for a named phase, batch and sequence or context length.

    prefill:b1:s128    one forward over a 128-token prompt, batch 1
    decode:b1:c128     one new token attending to a KV cache of 128 tokens, batch 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from nas.errors import AnyshapeError

Phase = Literal["prefill", "decode"]
_PATTERN = re.compile(r"^(prefill|decode):b(\d+):([sc])(\d+)$")


@dataclass(frozen=True)
class Workload:
    phase: Phase = "prefill"
    batch: int = 1
    seq_len: int = 128  # prompt length (prefill) or KV-cache context length (decode)

    def __post_init__(self) -> None:
        if self.phase not in ("prefill", "decode"):
            raise AnyshapeError(f"workload.phase is {self.phase!r}; allowed: prefill, decode")
        if not 1 <= self.batch <= 4096:
            raise AnyshapeError(f"workload.batch is {self.batch}; allowed range 1..4096")
        if not 1 <= self.seq_len <= 1 << 20:
            raise AnyshapeError(f"workload length is {self.seq_len}; allowed range 1..{1 << 20}")

    @property
    def name(self) -> str:
        return f"{self.phase}:b{self.batch}:{'s' if self.phase == 'prefill' else 'c'}{self.seq_len}"

    @property
    def context_len(self) -> int:
        """Tokens held in the KV cache after this step (what memory is sized for)."""
        return self.seq_len + (1 if self.phase == "decode" else 0)

    @classmethod
    def parse(cls, text: str) -> Workload:
        m = _PATTERN.match(text.strip())
        if m is None:
            raise AnyshapeError(f"workload {text!r} is not like 'prefill:b1:s128' or 'decode:b1:c128'")
        phase, batch, letter, length = m.groups()
        if (phase == "prefill") != (letter == "s"):
            raise AnyshapeError(f"workload {text!r}: prefill takes s<prompt length>, decode takes c<context length>")
        return cls(phase=phase, batch=int(batch), seq_len=int(length))  # type: ignore[arg-type]

    @classmethod
    def default(cls, kind: str) -> Workload:
        """ARCHITECTURE.md defaults: prefill b=1 s=128 (decoders also decode b=1 c=128)."""
        return cls("prefill", 1, 128)
