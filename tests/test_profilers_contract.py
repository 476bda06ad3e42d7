"""Every profiler passes the same contract suite (profilers.testing.ProfilerContract)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from profilers._base import BaseProfiler
from profilers.fake import FakeProfiler
from profilers.protocol import ProtocolConfig
from profilers.testing import ProfilerContract

FAST = ProtocolConfig(threads=1, warmup=1, repeats=5, min_repeats=3, max_point_seconds=0.2, min_sample_ms=0.5, max_remeasures=1, rounds=1)


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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["disk cache", "no cache", "stagger", "stagger anchored"])
def test_onnxruntime_exports_each_graph_once_across_passes(tmp_path: Path, mode: str) -> None:
    from nas.families import family_for
    from profilers.blocks import ModelSpec
    from profilers.environment import cpu_slug
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.run import profile
    from profilers.testing import SMALL_GRID, TINY_LLAMA

    loaded: list[int] = []

    class NoCache(OnnxRuntimeProfiler):
        export_cache_bytes = 0

        def runner(self, spec, point):  # type: ignore[no-untyped-def]
            run = super().runner(spec, point)
            loaded.append(len(self._sessions))
            return run

    staggered = mode.startswith("stagger")
    rounds = 3 if staggered else 2
    protocol = dataclasses.replace(FAST, rounds=rounds, stagger=staggered, anchor=mode == "stagger anchored", spinning=mode != "stagger anchored")
    profiler = (OnnxRuntimeProfiler if mode == "disk cache" else NoCache)(protocol)
    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    result = profile(spec, cpu_slug(), "onnxruntime", tmp_path, grid=SMALL_GRID, profiler=profiler, progress=False, bandwidth_buffer_mib=16)
    anchors = len(json.loads((result.path.parent / "meta.json").read_text())["tables"]["tiny-llama"].get("anchor", {}).get("baseline_ms", {}))
    assert anchors == (1 if mode == "stagger anchored" else 0)
    # each anchor is exported once and kept loaded in its own session, whatever the stagger drops
    assert profiler._exports == result.rows * (2 if mode == "no cache" else 1) + anchors
    if staggered:  # each graph exported once with no disk cache: its session stayed loaded for its passes
        assert len(loaded) == rounds * result.rows and max(loaded) == rounds and profiler._cached_bytes == 0


def test_onnxruntime_refuses_an_anchor_beside_spinning_threads() -> None:
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler

    with pytest.raises(AnyshapeError, match="--no-spinning"):
        OnnxRuntimeProfiler(dataclasses.replace(FAST, anchor=True)).check_available()
    OnnxRuntimeProfiler(dataclasses.replace(FAST, anchor=True, spinning=False)).check_available()


def test_the_reference_probe_is_for_cpu_runtimes_that_leave_the_cpu_alone() -> None:
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.torch_profiler import TorchProfiler

    probe = TorchProfiler(FAST).probe
    assert probe is not None and probe() > 0
    assert TorchProfiler(dataclasses.replace(FAST, reference=False)).probe is None
    assert TorchProfiler(FAST, device="cuda").probe is None
    assert OnnxRuntimeProfiler(FAST).probe is None  # its spinning threads would be what the probe measures
    assert OnnxRuntimeProfiler(dataclasses.replace(FAST, spinning=False)).probe is not None  # spinning off: probed
    with pytest.raises(AnyshapeError, match=r"protocol\.spinning"):
        dataclasses.replace(FAST, spinning="no")


def test_a_profiler_can_keep_the_probe_away_from_its_anchored_samples() -> None:
    """ONNX Runtime's anchored rows time the torch probe before their samples (it slowed the next
    decode step unevenly); torch keeps it between them, where it shares the samples' threads."""
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.protocol import PROBES_FIRST
    from profilers.testing import TINY_LLAMA
    from profilers.torch_profiler import TorchProfiler
    from profilers.workload import BlockPoint

    assert OnnxRuntimeProfiler.probe_beside_samples is False and TorchProfiler.probe_beside_samples is True
    calls: list[str] = []

    class Apart(FakeProfiler):
        probe_beside_samples = False

        @property
        def probe(self):  # type: ignore[no-untyped-def]
            return lambda: calls.append("probe") or 1.0

    from nas.families import family_for
    from profilers.blocks import ModelSpec

    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    decode = BlockPoint("whole-model", "decode", 1, 1, 16, 2, 4, 2, 64)
    protocol = dataclasses.replace(FAST, anchor=True, rounds=2, max_point_seconds=60.0)
    m = Apart(protocol).measure(spec, decode)
    assert calls == ["probe"] * PROBES_FIRST and m.anchor_ratio is not None and m.reference_ms == 1.0
    calls.clear()
    Apart(protocol).measure_rounds(spec, decode)
    assert calls == ["probe"] * PROBES_FIRST * 2  # each pass probes before its samples
    calls.clear()
    Apart(protocol).measure(spec, dataclasses.replace(decode, phase="prefill", seq_len=16, context_len=0))
    assert len(calls) == FAST.repeats  # prefill is not anchored here: probed beside every sample


@pytest.mark.slow
def test_onnxruntime_without_spinning_is_probed_and_says_so(tmp_path: Path) -> None:
    import json

    from nas.families import family_for
    from profilers.blocks import ModelSpec
    from profilers.environment import cpu_slug
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.run import profile
    from profilers.testing import SMALL_GRID, TINY_LLAMA

    profiler = OnnxRuntimeProfiler(dataclasses.replace(FAST, rounds=1, spinning=False))
    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    result = profile(spec, cpu_slug(), "onnxruntime", tmp_path, grid=SMALL_GRID, profiler=profiler, progress=False, bandwidth_buffer_mib=16)
    entry = json.loads((result.path.parent / "meta.json").read_text())["tables"]["tiny-llama"]
    assert entry["runtime_info"]["intra_op_spinning"] is False and entry["protocol"]["spinning"] is False
    assert len(entry["reference"]["probe_ms_by_point"]) == result.rows  # every point was probed
