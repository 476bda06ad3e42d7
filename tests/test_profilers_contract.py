"""Every profiler passes the same contract suite (profilers.testing.ProfilerContract)."""

from __future__ import annotations

import pytest

from profilers._base import BaseProfiler
from profilers.fake import FakeProfiler
from profilers.protocol import ProtocolConfig
from profilers.testing import ProfilerContract

FAST = ProtocolConfig(threads=1, warmup=1, repeats=5, min_repeats=3, max_point_seconds=0.2, min_sample_ms=0.5, max_remeasures=1)


class TestFakeProfiler(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        return FakeProfiler(FAST, noise_cv=0.02, seed=0)


@pytest.mark.slow
class TestTorchProfiler(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        from profilers.torch_profiler import TorchProfiler

        return TorchProfiler(FAST)


@pytest.mark.slow
class TestOnnxRuntimeProfiler(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        from profilers.onnxruntime_profiler import OnnxRuntimeProfiler

        return OnnxRuntimeProfiler(FAST)
