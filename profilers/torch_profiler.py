"""Eager PyTorch on CPU (wall clock) or CUDA (CUDA events around the calls, then synchronize)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from nas.errors import AnyshapeError
from profilers._base import BaseProfiler
from profilers.blocks import BlockBuilder, BuiltBlock, ModelSpec
from profilers.protocol import RunFn
from profilers.workload import BlockPoint


class TorchProfiler(BaseProfiler):
    runtime: ClassVar[str] = "torch"
    version_package: ClassVar[str | None] = "torch"

    _builder: BlockBuilder | None = None
    _threads_before: int | None = None

    def check_available(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise AnyshapeError(
                "CUDA was asked for but torch sees no CUDA device here (torch "
                f"{torch.__version__}); run on the GPU machine, or profile --device with this machine's CPU"
            )

    def setup(self) -> None:
        import torch

        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.protocol.threads)

    def teardown(self) -> None:
        import torch

        super().teardown()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        self._builder = None

    def build(self, spec: ModelSpec, point: BlockPoint) -> BuiltBlock:
        if self._builder is None or self._builder.spec is not spec:
            self._builder = BlockBuilder(spec, device=self.device)
        return self._builder.build(point)

    def runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        block = self.build(spec, point)
        return _cuda_run(block) if self.device == "cuda" else _cpu_run(block)

    def describe(self) -> dict[str, Any]:
        import torch

        info = super().describe()
        info.update(torch=torch.__version__, interop_threads=torch.get_num_interop_threads())
        return info


def _cpu_run(block: BuiltBlock) -> RunFn:
    import torch

    def run(n: int) -> float:
        with torch.inference_mode():
            start = time.perf_counter_ns()
            for _ in range(n):
                block()
            return (time.perf_counter_ns() - start) / 1e6

    return run


def _cuda_run(block: BuiltBlock) -> RunFn:  # pragma: no cover - needs a GPU
    import torch

    def run(n: int) -> float:
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            torch.cuda.synchronize()
            begin.record()
            for _ in range(n):
                block()
            end.record()
            torch.cuda.synchronize()
        return float(begin.elapsed_time(end))

    return run
