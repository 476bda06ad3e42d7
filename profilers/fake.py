"""A profiler that needs no hardware: deterministic synthetic latencies from FLOPs and bytes.

Latency of a point = ``max(flops / compute, bytes / bandwidth) + overhead_ms``, times a noise
factor drawn from a seeded generator (``noise_cv``; ``noisy_blocks`` get ``noisy_cv``), times a
``slowdown`` of the whole machine at chosen points (the anchor slows down with it).
It runs through the same protocol as the real profilers, so protocol tests use it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

from nas.errors import AnyshapeError
from profilers._base import BaseProfiler, DeviceKind
from profilers.blocks import ModelSpec
from profilers.cost import ModelDims, block_cost
from profilers.protocol import ProtocolConfig, RunFn
from profilers.workload import BlockPoint


class FakeProfiler(BaseProfiler):
    runtime: ClassVar[str] = "fake"

    def __init__(
        self,
        protocol: ProtocolConfig | None = None,
        device: DeviceKind = "cpu",
        *,
        gflops: float = 50.0,
        bandwidth_gb_s: float = 20.0,
        overhead_ms: float = 0.01,
        noise_cv: float = 0.0,
        noisy_blocks: tuple[str, ...] = (),
        noisy_cv: float = 0.5,
        seed: int = 0,
        fail_after: int | None = None,
        slowdown: Mapping[int, float] | None = None,
    ):
        super().__init__(protocol, device)
        if gflops <= 0 or bandwidth_gb_s <= 0 or overhead_ms < 0 or noise_cv < 0 or noisy_cv < 0:
            raise AnyshapeError("FakeProfiler: gflops and bandwidth_gb_s must be > 0; overhead_ms and noise >= 0")
        self.gflops, self.bandwidth_gb_s, self.overhead_ms = gflops, bandwidth_gb_s, overhead_ms
        self.noise_cv, self.noisy_blocks, self.noisy_cv = noise_cv, noisy_blocks, noisy_cv
        self.rng = random.Random(seed)
        self.fail_after = fail_after  # raise KeyboardInterrupt on this many-th point (simulated kill)
        self.points_started = 0
        # point number (1-based, every pass counts) -> how much slower the whole machine runs
        # then: its samples and the anchor both slow down, like a burst of load
        self.slowdown = dict(slowdown or {})

    def check_available(self) -> None:
        if self.device == "cuda":
            raise AnyshapeError("the fake profiler has no CUDA device; use device 'cpu'")

    def latency_ms(self, spec: ModelSpec, point: BlockPoint) -> float:
        """The noise-free latency of ``point``."""
        cost = block_cost(ModelDims.from_config(spec.family, spec.config), point)
        return max(cost.flops / (self.gflops * 1e6), cost.bytes / (self.bandwidth_gb_s * 1e6)) + self.overhead_ms

    def runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        self.points_started += 1
        if self.fail_after is not None and self.points_started > self.fail_after:
            raise KeyboardInterrupt(f"fake profiler killed after {self.fail_after} points")
        base = self.latency_ms(spec, point) * self._slowdown()
        cv = self.noisy_cv if point.block in self.noisy_blocks else self.noise_cv

        def run(n: int) -> float:
            return sum(base * max(0.05, self.rng.gauss(1.0, cv)) for _ in range(n))

        return run

    def anchor_runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """The anchor runs on the same machine: it slows down with the point being measured (not counted as a point)."""
        base = self.latency_ms(spec, point)

        def run(n: int) -> float:
            slow = self._slowdown()
            return sum(base * slow * max(0.05, self.rng.gauss(1.0, self.noise_cv)) for _ in range(n))

        return run

    def _slowdown(self) -> float:
        """How much slower the machine runs the current point."""
        return self.slowdown.get(self.points_started, 1.0)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(gflops=self.gflops, bandwidth_gb_s=self.bandwidth_gb_s, overhead_ms=self.overhead_ms, noise_cv=self.noise_cv)
        return info
