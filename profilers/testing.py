"""A reusable contract test suite every profiler passes (like optuna.testing.pytest_samplers).

Use it from a test module::

    class TestMyProfiler(ProfilerContract):
        @pytest.fixture
        def profiler(self) -> BaseProfiler:
            return MyProfiler(ProtocolConfig(...))

``model_spec`` may be overridden too; by default it is a tiny random Llama config.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from profilers._base import BaseProfiler
from profilers.blocks import ModelSpec
from profilers.workload import BlockPoint, GridConfig

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 256,
    "max_position_embeddings": 256,
}
SMALL_GRID = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=2, head_pairs=2, whole_model_samples=2)


class ProfilerContract:
    """What every :class:`BaseProfiler` must do; subclasses provide the ``profiler`` fixture."""

    @pytest.fixture
    def profiler(self) -> BaseProfiler:
        raise NotImplementedError("a contract test class must define the 'profiler' fixture")

    @pytest.fixture
    def model_spec(self) -> ModelSpec:
        from nas.families import family_for

        return ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)

    def test_has_a_runtime_name(self, profiler: BaseProfiler) -> None:
        assert isinstance(profiler.runtime, str) and profiler.runtime and "/" not in profiler.runtime

    def test_available_on_cpu(self, profiler: BaseProfiler) -> None:
        profiler.check_available()

    def test_runner_returns_elapsed_ms(self, profiler: BaseProfiler, model_spec: ModelSpec) -> None:
        point = BlockPoint("mlp", "prefill", 1, 16, 0, 1, 0, 0, 128)
        profiler.setup()
        try:
            run = profiler.runner(model_spec, point)
            one, three = run(1), run(3)
        finally:
            profiler.teardown()
        assert 0 < one < 10_000 and 0 < three < 30_000
        assert math.isfinite(one) and math.isfinite(three)

    def test_measurement_is_ordered_and_within_protocol(self, profiler: BaseProfiler, model_spec: ModelSpec) -> None:
        point = BlockPoint("attention", "decode", 1, 1, 16, 1, 4, 2, 0)
        profiler.setup()
        try:
            m = profiler.measure(model_spec, point)
        finally:
            profiler.teardown()
        assert 0 < m.latency_ms_p10 <= m.latency_ms_p50 <= m.latency_ms_p90
        assert profiler.protocol.min_repeats <= m.repeats <= profiler.protocol.repeats
        assert m.cv >= 0 and m.noisy == (m.cv > profiler.protocol.cv_threshold)
        assert 1 <= m.attempts <= 1 + profiler.protocol.max_remeasures
        if profiler.protocol.anchored:  # timed beside its workload's anchor: the ratio and the anchor's time come back
            assert m.anchor_ratio is not None and m.anchor_ratio > 0 and m.anchor_ms is not None and m.anchor_ms > 0
            assert m.judged == m.anchor_ratio
        else:
            assert m.anchor_ratio is None and m.anchor_ms is None and m.judged == m.latency_ms_p50

    def test_every_block_kind_and_phase_runs(self, profiler: BaseProfiler, model_spec: ModelSpec) -> None:
        from profilers.workload import build_points

        space = model_spec.family.space(model_spec.config)
        points = build_points(model_spec.family, space, SMALL_GRID)
        seen = set()
        profiler.setup()
        try:
            for point in points:
                if (point.block, point.phase) in seen:
                    continue
                seen.add((point.block, point.phase))
                assert profiler.runner(model_spec, point)(1) > 0
        finally:
            profiler.teardown()
        assert {b for b, _ in seen} == {"attention", "mlp", "embed", "head", "norm", "whole-model"}
        assert {p for _, p in seen} == {"prefill", "decode"}

    def test_describe_names_runtime_and_threads(self, profiler: BaseProfiler) -> None:
        info = profiler.describe()
        assert info["runtime"] == profiler.runtime
        assert info["threads"] == profiler.protocol.threads

    def test_profile_writes_a_loadable_table(self, profiler: BaseProfiler, model_spec: ModelSpec, tmp_path: Path) -> None:
        from profilers.environment import cpu_slug
        from profilers.run import profile
        from profilers.tables import load_table, row_key

        grid = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=1, head_pairs=1, whole_model_samples=1)
        result = profile(model_spec, cpu_slug(), profiler.runtime, tmp_path, grid=grid, profiler=profiler, progress=False,
                         bandwidth_buffer_mib=64)
        table = load_table(result.path, device=cpu_slug(), runtime=profiler.runtime)
        assert table.source == "measured" and len(table.rows) == result.rows == 12
        assert table.meta.protocol is not None and table.meta.protocol.threads == profiler.protocol.threads
        assert all(r["threads"] == profiler.protocol.threads for r in table.rows)
        assert table.meta.bandwidth_gb_s > 0
        measurement = table.meta.measurement
        assert measurement["reference"] == profiler.protocol.reference
        if profiler.protocol.anchored:  # every row timed beside its workload's anchor, each anchor with a baseline
            assert set(measurement["ratio_by_point"]) == {row_key(r) for r in table.rows}
            assert set(measurement["anchor_by_point"].values()) == set(measurement["baseline_ms"])
            assert all(v > 0 for v in measurement["baseline_ms"].values())
