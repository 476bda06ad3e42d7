"""The measurement protocol, its presets and its measurement model, driven by synthetic run functions (no hardware)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from nas.errors import AnyshapeError
from profilers.protocol import (
    Anchor,
    Measurement,
    MeasurementModel,
    ProtocolConfig,
    coefficient_of_variation,
    gc_disabled,
    load_protocol,
    measure,
    median_pass,
    pass_schedule,
    percentile,
    pinned,
)

FAST = dict(threads=1, warmup=2, repeats=12, min_repeats=4, max_point_seconds=60.0, min_sample_ms=0.0)


def scripted(latencies_ms: list[float]):
    """A run(n) that returns the next scripted per-call latency, times n."""
    it = iter(latencies_ms)
    calls: list[int] = []

    def run(n: int) -> float:
        calls.append(n)
        return next(it) * n

    run.calls = calls  # type: ignore[attr-defined]
    return run


def m(p50: float, ratio: float | None = None) -> Measurement:
    """A pass with raw p50 ``p50`` (p10 / p90 around it) and, anchored, ratio ``ratio`` to its anchor."""
    return Measurement(p50 * 0.9, p50, p50 * 1.1, 5, 0.01, False, 1, 1,
                       anchor_ms=None if ratio is None else p50 / ratio, anchor_ratio=ratio)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100, 37.5])
def test_percentile_matches_numpy(q: float) -> None:
    values = [random.Random(3).uniform(0, 10) for _ in range(17)]
    values = [v * (i + 1) for i, v in enumerate(values)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_cv_matches_numpy() -> None:
    values = [1.0, 2.0, 4.0, 8.0]
    assert coefficient_of_variation(values) == pytest.approx(np.std(values, ddof=1) / np.mean(values))
    assert coefficient_of_variation([5.0]) == 0.0


# --------------------------------------------------------------------------- measure


def test_percentiles_of_known_samples() -> None:
    # warm-up 2 calls, then 10 samples 1..10 ms
    run = scripted([50.0, 50.0, *[float(v) for v in range(1, 11)]])
    got = measure(run, ProtocolConfig(**{**FAST, "repeats": 10, "cv_threshold": 10.0}))
    assert (got.latency_ms_p10, got.latency_ms_p50, got.latency_ms_p90) == pytest.approx((1.9, 5.5, 9.1))
    assert got.repeats == 10 and got.attempts == 1 and not got.noisy
    assert got.calls_per_sample == 1
    assert got.anchor_ms is None and got.anchor_ratio is None and got.judged == got.latency_ms_p50  # not anchored: raw


def test_fast_calls_are_folded_into_samples() -> None:
    run = scripted([0.01] * 100)
    got = measure(run, ProtocolConfig(**{**FAST, "min_sample_ms": 1.0, "repeats": 5, "min_repeats": 5}))
    assert got.calls_per_sample == 100
    assert run.calls[-1] == 100  # type: ignore[attr-defined]
    assert got.latency_ms_p50 == pytest.approx(0.01)


def test_noisy_point_is_remeasured_and_recovers() -> None:
    noisy = [1.0, 5.0] * 3  # cv ~ 0.76
    quiet = [2.0, 2.02, 1.98, 2.0, 2.01, 1.99]
    run = scripted([1.0, 1.0, *noisy, *quiet])
    cfg = ProtocolConfig(**{**FAST, "repeats": 6, "min_repeats": 6, "cv_threshold": 0.05, "max_remeasures": 2})
    got = measure(run, cfg)
    assert got.attempts == 2 and not got.noisy
    assert got.latency_ms_p50 == pytest.approx(2.0, abs=0.01)


def test_persistently_noisy_point_is_flagged_with_its_best_attempt() -> None:
    a = [1.0, 9.0] * 3
    b = [1.0, 3.0] * 3  # the least noisy attempt
    c = [1.0, 6.0] * 3
    run = scripted([1.0, 1.0, *a, *b, *c])
    cfg = ProtocolConfig(**{**FAST, "repeats": 6, "min_repeats": 6, "cv_threshold": 0.05, "max_remeasures": 2})
    got = measure(run, cfg)
    assert got.attempts == 3 and got.noisy
    assert got.cv == pytest.approx(coefficient_of_variation(b))
    assert got.latency_ms_p50 == pytest.approx(2.0)


def test_max_point_seconds_stops_after_min_repeats() -> None:
    import time

    def run(n: int) -> float:
        time.sleep(0.02)
        return 1.0 * n

    cfg = ProtocolConfig(**{**FAST, "repeats": 1000, "min_repeats": 3, "max_point_seconds": 0.05})
    got = measure(run, cfg)
    assert 3 <= got.repeats < 10


def test_gc_is_off_while_timing_and_restored() -> None:
    import gc

    seen = []

    def run(n: int) -> float:
        seen.append(gc.isenabled())
        return 1.0 * n

    assert gc.isenabled()
    measure(run, ProtocolConfig(**{**FAST, "repeats": 4}))
    assert seen and not any(seen)
    assert gc.isenabled()
    with gc_disabled():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinning_applies_and_restores_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with pinned((cpu,)):
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    seen: list[set[int]] = []
    measure(lambda n: seen.append(os.sched_getaffinity(0)) or 1.0 * n, ProtocolConfig(**{**FAST, "repeats": 4}, pin_cpus=(cpu,)))
    assert seen and all(s == {cpu} for s in seen) and os.sched_getaffinity(0) == before  # measure pins while timing


def test_the_anchor_is_timed_after_every_sample_and_divides_a_drift_out() -> None:
    """A drift that slows the point and the anchor alike (30 % over the samples) leaves the ratio
    steady: the attempt is judged by the ratios' CV, so it is not re-measured or flagged."""
    config = ProtocolConfig(threads=1, warmup=1, repeats=8, min_repeats=8, min_sample_ms=0.0, cv_threshold=0.05)
    speed = [1.0]
    order: list[str] = []

    def run(n: int) -> float:
        order.append("sample")
        speed[0] *= 1.04  # the machine slows down sample by sample
        return 10.0 * speed[0] * n

    def anchor_run(n: int) -> float:
        order.append("anchor")
        return 4.0 * speed[0] * n

    got = measure(run, config, anchor=Anchor("whole-model|decode|anchor", anchor_run, calls=2))
    assert got.anchor_ratio == pytest.approx(2.5) and got.cv < 1e-9 and not got.noisy and got.attempts == 1
    assert got.anchor_ms == pytest.approx(percentile([4.0 * 1.04 ** (i + 2) for i in range(8)], 50))
    assert got.judged == got.anchor_ratio  # anchored: passes are ordered by the ratio
    assert order[1:] == ["sample", "anchor"] * 8  # after the warm-up call: each sample, then its anchor
    # the latencies themselves stay raw
    assert got.latency_ms_p50 == pytest.approx(percentile([10.0 * 1.04 ** (i + 2) for i in range(8)], 50))
    raw = measure(run, config)  # unanchored, the drift makes the same point noisy
    assert raw.anchor_ratio is None and raw.cv > 0.05


# --------------------------------------------------------------------------- passes


def test_median_pass_keeps_the_middle_by_raw_p50_when_not_anchored() -> None:
    passes = [m(10.0), m(7.0), m(13.0)]  # a fast moment at 7, a slow one at 13
    assert median_pass(passes).latency_ms_p50 == 10.0
    assert median_pass([m(10.0), m(7.0), m(10.4), m(10.2)]).latency_ms_p50 == 10.0  # even count: the lower middle
    assert median_pass([m(12.0), m(9.0)]).latency_ms_p50 == 9.0
    assert median_pass([m(3.0)]).latency_ms_p50 == 3.0
    assert median_pass(passes) is passes[0]  # the pass itself, p10 / p90 included
    with pytest.raises(ValueError):
        median_pass([])


def test_median_pass_keeps_the_middle_by_anchor_ratio_when_anchored() -> None:
    # by raw p50 the middle would be the 10.0 pass; by ratio it is the 12.0 one (the machine was slow then, the ratio says 2.2)
    passes = [m(12.0, 2.2), m(9.0, 2.6), m(10.0, 2.0)]
    assert median_pass(passes).anchor_ratio == 2.2 and median_pass(passes).latency_ms_p50 == 12.0
    assert median_pass([m(12.0, 2.0), m(9.0, 2.6)]).anchor_ratio == 2.0  # even count: the lower middle ratio
    four = [m(8.0, 3.0), m(9.0, 1.0), m(10.0, 2.5), m(11.0, 2.0)]
    assert median_pass(four).anchor_ratio == 2.0  # ratios 1.0, 2.0, 2.5, 3.0: the lower middle
    assert median_pass(list(reversed(four))).anchor_ratio == 2.0  # whatever the order of the passes


@pytest.mark.parametrize("count,rounds", [(7, 3), (2, 3), (5, 1), (0, 2)])
def test_pass_schedule_measures_every_pass_once_in_order(count: int, rounds: int) -> None:
    for stagger in (False, True):
        order = list(pass_schedule(count, rounds, stagger))
        assert sorted(order) == sorted((r, i) for r in range(rounds) for i in range(count))
        for i in range(count):  # a point's passes come in order
            assert [r for r, j in order if j == i] == list(range(rounds))
    whole = list(pass_schedule(count, rounds, False))
    assert whole == [(r, i) for r in range(rounds) for i in range(count)]  # whole passes over the table
    staggered = list(pass_schedule(count, rounds, True))
    for i in range(count):  # staggered: from a point's first pass to its last, at most `rounds` points are loaded
        first = staggered.index((0, i))
        last = staggered.index((rounds - 1, i))
        assert sum(1 for r, _ in staggered[first:last + 1] if r == 0) <= rounds


def test_a_staggered_schedule_keeps_a_points_passes_one_point_apart() -> None:
    assert list(pass_schedule(3, 2, True)) == [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (1, 2)]


# --------------------------------------------------------------------------- ProtocolConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threads", 0, "protocol.threads"),
        ("warmup", -1, "protocol.warmup"),
        ("min_repeats", 1, "protocol.min_repeats"),
        ("repeats", 2, "protocol.repeats"),
        ("max_point_seconds", 0, "protocol.max_point_seconds"),
        ("min_sample_ms", -1, "protocol.min_sample_ms"),
        ("cv_threshold", 0, "protocol.cv_threshold"),
        ("max_remeasures", -1, "protocol.max_remeasures"),
        ("rounds", 0, "protocol.rounds"),
        ("rounds", 2.5, "protocol.rounds is 2.5; it must be an integer"),
        ("cv_threshold", "low", "protocol.cv_threshold is 'low'; it must be a number"),
        ("pin_cpus", (-1,), "protocol.pin_cpus"),
        ("pin_cpus", (), "protocol.pin_cpus"),
        ("reference", "probe", "protocol.reference is 'probe'; allowed: none, anchor"),
        ("name", "", "protocol.name"),
    ],
)
def test_protocol_config_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(AnyshapeError, match=message):
        ProtocolConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["stagger", "spinning"])
def test_protocol_switches_must_be_bools(name: str) -> None:
    with pytest.raises(AnyshapeError, match=rf"protocol\.{name}"):
        ProtocolConfig(**{name: "yes"})  # type: ignore[arg-type]


def test_machine_relative_limits_are_checked_here_not_in_the_record() -> None:
    """A table's protocol may come from a bigger machine: it loads, but cannot be run with here."""
    cores = os.cpu_count() or 1
    big = ProtocolConfig(threads=4 * cores + 1, pin_cpus=(cores + 7,))  # a record of another machine: fine
    with pytest.raises(AnyshapeError, match=rf"protocol.threads is {4 * cores + 1}; allowed range 1..{4 * cores} on this machine"):
        big.check_here()
    with pytest.raises(AnyshapeError, match=r"protocol.pin_cpus is \[.*\]; CPUs must be in 0\.\." + str(cores - 1)):
        ProtocolConfig(threads=1, pin_cpus=(cores,)).check_here()
    ProtocolConfig(threads=4 * cores, pin_cpus=(0,)).check_here()
    # every profiler checks its protocol when it is made
    from profilers.fake import FakeProfiler

    with pytest.raises(AnyshapeError, match="on this machine"):
        FakeProfiler(big)


def test_protocol_config_round_trips() -> None:
    cfg = ProtocolConfig(name="mine", reference="anchor", threads=1, warmup=4, repeats=9, pin_cpus=(1, 0, 1), spinning=False)
    assert cfg.pin_cpus == (0, 1)  # sorted, once each
    assert cfg.anchored and not ProtocolConfig().anchored
    data = cfg.to_dict()
    assert data["pin_cpus"] == [0, 1] and data["reference"] == "anchor"
    assert ProtocolConfig.from_dict(data) == cfg
    with pytest.raises(AnyshapeError, match="unknown field"):
        ProtocolConfig.from_dict({"nope": 1})
    with pytest.raises(AnyshapeError, match=r"unknown field\(s\) \['anchor'\]"):  # the old switches are gone
        ProtocolConfig.from_dict({"anchor": True})
    with pytest.raises(AnyshapeError, match="must be a mapping"):
        ProtocolConfig.from_dict([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the measurement model


def test_the_model_of_a_raw_protocol_leaves_measurements_raw() -> None:
    model = MeasurementModel(load_protocol("quiet", threads=1))
    got = m(10.0, 2.5)
    assert model.row(got) is got and model.at_table_speed(got) == 10.0
    assert model.row(m(10.0)) == m(10.0)  # nothing anchored needed
    assert model.to_dict() == {"reference": "none", "baseline_ms": {}}
    assert "raw time" in model.describe()
    with pytest.raises(AnyshapeError, match="reference none, yet anchor baselines were given"):
        MeasurementModel(load_protocol("quiet", threads=1), {"a": 1.0})


def test_the_model_of_an_anchored_protocol_is_ratio_times_baseline() -> None:
    model = MeasurementModel(load_protocol("shared-vm", threads=1), {"decode-anchor": 4.0, "prefill-anchor": 8.0})
    slow = m(12.0, 2.5)  # measured while the machine ran 1.2x slow: 12 ms raw, 2.5 anchor steps
    row = model.row(slow, "decode-anchor")
    assert (row.latency_ms_p10, row.latency_ms_p50, row.latency_ms_p90) == pytest.approx((9.0, 10.0, 11.0))  # p10 / p90 move with p50
    assert row.anchor_ratio == 2.5 and row.repeats == slow.repeats
    assert model.at_table_speed(slow, "decode-anchor") == pytest.approx(10.0)
    assert model.at_table_speed(slow, "prefill-anchor") == pytest.approx(20.0)  # its own anchor's baseline
    assert model.to_dict() == {"reference": "anchor", "baseline_ms": {"decode-anchor": 4.0, "prefill-anchor": 8.0}}
    assert "ratio" in model.describe()
    for measurement, anchor in ((slow, "elsewhere"), (slow, None), (m(12.0), "decode-anchor")):
        with pytest.raises(AnyshapeError, match="has no ratio to anchor"):
            model.row(measurement, anchor)


@pytest.mark.parametrize("baselines", [{}, {"a": 0.0}, {"a": -1.0}, {"a": "1"}])
def test_an_anchored_model_needs_positive_baselines(baselines: dict[str, object]) -> None:
    with pytest.raises(AnyshapeError, match="baseline"):
        MeasurementModel(load_protocol("shared-vm", threads=1), baselines)  # type: ignore[arg-type]


def test_measure_then_the_model_gives_the_same_number_at_any_machine_speed() -> None:
    """The round trip verify relies on: a point measured at two machine speeds, each beside its anchor,
    comes out of the model as the same number."""
    config = ProtocolConfig(threads=1, warmup=1, repeats=6, min_repeats=6, min_sample_ms=0.0, reference="anchor")

    def timed(speed: float) -> Measurement:
        return measure(lambda n: 10.0 * speed * n, config, Anchor("a", lambda n: 4.0 * speed * n, calls=1))

    quick, slow = timed(1.0), timed(1.5)
    model = MeasurementModel(config, {"a": quick.anchor_ms})  # the run's baseline: the anchor at full speed
    assert slow.latency_ms_p50 == pytest.approx(15.0) and quick.latency_ms_p50 == pytest.approx(10.0)
    assert model.at_table_speed(slow, "a") == pytest.approx(model.at_table_speed(quick, "a")) == pytest.approx(10.0)
