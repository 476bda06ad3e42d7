"""Every profiler passes the same contract suite (profilers.testing.ProfilerContract), raw and anchored."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from profilers._base import BaseProfiler
from profilers.fake import FakeProfiler
from profilers.protocol import ProtocolConfig, load_protocol
from profilers.testing import ProfilerContract

FAST = ProtocolConfig(threads=1, warmup=1, repeats=5, min_repeats=3, max_point_seconds=0.2, min_sample_ms=0.5, max_remeasures=1, rounds=1)
#: FAST, every sample timed beside its workload's anchor (ONNX Runtime's threads must not spin then)
ANCHORED = dataclasses.replace(FAST, name="fast-anchored", reference="anchor", spinning=False)


class TestFakeProfiler(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        return FakeProfiler(FAST, noise_cv=0.02, seed=0)


class TestFakeProfilerAnchored(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        return FakeProfiler(ANCHORED, noise_cv=0.02, seed=0)


@pytest.mark.slow
class TestTorchProfiler(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        from profilers.torch_profiler import TorchProfiler

        return TorchProfiler(FAST)


@pytest.mark.slow
class TestTorchProfilerAnchored(ProfilerContract):
    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        from profilers.torch_profiler import TorchProfiler

        return TorchProfiler(ANCHORED)


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
    protocol = dataclasses.replace(ANCHORED if mode == "stagger anchored" else FAST, rounds=rounds, stagger=staggered)
    profiler = (OnnxRuntimeProfiler if mode == "disk cache" else NoCache)(protocol)
    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    result = profile(spec, cpu_slug(), "onnxruntime", tmp_path, grid=SMALL_GRID, profiler=profiler, progress=False, bandwidth_buffer_mib=16)
    entry = json.loads((result.path.parent / "meta.json").read_text())["tables"]["tiny-llama"]
    anchors = len(entry["measurement"]["baseline_ms"])
    assert anchors == (2 if mode == "stagger anchored" else 0)  # SMALL_GRID: one prefill and one decode workload
    if mode == "stagger anchored":  # every point timed beside its anchor, ORT's threads not spinning, and the meta says so
        assert len(entry["measurement"]["ratio_by_point"]) == result.rows
        assert entry["runtime_info"]["intra_op_spinning"] is False and entry["protocol"]["spinning"] is False
        assert "anchored_rows_probe" not in entry["runtime_info"]  # no probe any more
    # each anchor is exported once and kept loaded in its own session, whatever the stagger drops
    assert profiler._exports == result.rows * (2 if mode == "no cache" else 1) + anchors
    if staggered:  # each graph exported once with no disk cache: its session stayed loaded for its passes
        assert len(loaded) == rounds * result.rows and max(loaded) == rounds and profiler._cached_bytes == 0


def test_onnxruntime_refuses_an_anchor_beside_spinning_threads() -> None:
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler

    spinning = dataclasses.replace(ANCHORED, spinning=True)
    with pytest.raises(AnyshapeError, match=r"protocol fast-anchored anchors its points .*set spinning: false") as e:
        OnnxRuntimeProfiler(spinning).check_available()
    assert "\n" not in str(e.value)
    OnnxRuntimeProfiler(ANCHORED).check_available()
    OnnxRuntimeProfiler(FAST).check_available()  # raw rows: its threads may spin (ORT's default)
    OnnxRuntimeProfiler(load_protocol("shared-vm", threads=1)).check_available()  # the preset has it right
    with pytest.raises(AnyshapeError, match="spinning: false"):
        OnnxRuntimeProfiler(load_protocol("shared-vm", threads=1, spinning=True)).check_available()
    with pytest.raises(AnyshapeError, match=r"protocol\.spinning"):
        dataclasses.replace(FAST, spinning="no")


def test_every_profiler_checks_its_protocol_against_this_machine() -> None:
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.torch_profiler import TorchProfiler

    too_many = dataclasses.replace(FAST, threads=100_000)  # a record from a bigger machine loads, but cannot run here
    for cls in (FakeProfiler, TorchProfiler, OnnxRuntimeProfiler):
        with pytest.raises(AnyshapeError, match=r"protocol.threads is 100000; allowed range 1..[0-9]+ on this machine"):
            cls(too_many)
        with pytest.raises(AnyshapeError, match=r"protocol.pin_cpus is .* on this machine"):
            cls(dataclasses.replace(FAST, pin_cpus=(100_000,)))


def test_a_raw_profiler_builds_no_anchor_and_an_anchored_one_one_per_workload() -> None:
    from nas.families import family_for
    from profilers.blocks import ModelSpec
    from profilers.testing import TINY_LLAMA
    from profilers.workload import BlockPoint

    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    decode = BlockPoint("attention", "decode", 1, 1, 16, 1, 4, 2, 0)
    wider = dataclasses.replace(decode, block="mlp", heads=0, kv_heads=0, ffn=128)
    prefill = BlockPoint("mlp", "prefill", 1, 16, 0, 1, 0, 0, 128)
    assert FakeProfiler(FAST).anchor(spec, decode) is None
    anchored = FakeProfiler(ANCHORED)
    a, b, c = anchored.anchor(spec, decode), anchored.anchor(spec, wider), anchored.anchor(spec, prefill)
    assert a is not None and a is b and c is not None and c is not a  # one per workload, built once
    assert a.key.startswith("whole-model|decode|") and c.key.startswith("whole-model|prefill|")
    assert a() > 0 and a.calls >= 1
    anchored.teardown()
    assert anchored._anchors == {}  # dropped with the run


def test_onnxruntime_times_the_decode_graph_extract_writes() -> None:
    """A decoder's decode step on ONNX Runtime is the KV-cache graph of ``extract --onnx`` (Optimum's
    layout), so the table times what a user's generation runs; torch keeps its stacked-cache step."""
    from nas.families import family_for
    from nas.onnx_export import cache_names
    from profilers.blocks import BlockBuilder, ModelSpec
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.testing import TINY_LLAMA
    from profilers.workload import BlockPoint

    spec = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
    decode = BlockPoint("whole-model", "decode", 2, 1, 16, 2, 4, 2, 64)
    profiler = OnnxRuntimeProfiler(FAST)
    profiler.setup()
    try:
        session, feed = profiler._session(spec, decode)
        past, present = cache_names(2)
        assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "position_ids", *past]
        assert [o.name for o in session.get_outputs()][1:] == present
        assert feed["attention_mask"].shape == (2, 17) and feed["past_key_values.0.key"].shape[2] == 16
        assert profiler.measure(spec, decode).latency_ms_p50 > 0
        prefill = BlockPoint("whole-model", "prefill", 2, 8, 0, 2, 4, 2, 64)  # same shape: the cached model is not reused
        assert [i.name for i in profiler._session(spec, prefill)[0].get_inputs()] == ["input_ids"]
    finally:
        profiler.teardown()
    assert profiler.describe()["decode_graph"] == "exported"
    assert type(BlockBuilder(spec).build(decode).module).__name__ == "_DecoderModel"
