"""The measurement protocol, driven by synthetic run functions (no hardware)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from nas.errors import AnyshapeError
from profilers.protocol import (
    ProtocolConfig,
    coefficient_of_variation,
    gc_disabled,
    measure,
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


def test_percentiles_of_known_samples() -> None:
    # warm-up 2 calls, then 10 samples 1..10 ms
    run = scripted([50.0, 50.0, *[float(v) for v in range(1, 11)]])
    m = measure(run, ProtocolConfig(**{**FAST, "repeats": 10, "cv_threshold": 10.0}))
    assert (m.latency_ms_p10, m.latency_ms_p50, m.latency_ms_p90) == pytest.approx((1.9, 5.5, 9.1))
    assert m.repeats == 10 and m.attempts == 1 and not m.noisy
    assert m.calls_per_sample == 1


def test_fast_calls_are_folded_into_samples() -> None:
    run = scripted([0.01] * 100)
    m = measure(run, ProtocolConfig(**{**FAST, "min_sample_ms": 1.0, "repeats": 5, "min_repeats": 5}))
    assert m.calls_per_sample == 100
    assert run.calls[-1] == 100  # type: ignore[attr-defined]
    assert m.latency_ms_p50 == pytest.approx(0.01)


def test_noisy_point_is_remeasured_and_recovers() -> None:
    noisy = [1.0, 5.0] * 3  # cv ~ 0.76
    quiet = [2.0, 2.02, 1.98, 2.0, 2.01, 1.99]
    run = scripted([1.0, 1.0, *noisy, *quiet])
    cfg = ProtocolConfig(**{**FAST, "repeats": 6, "min_repeats": 6, "cv_threshold": 0.05, "max_remeasures": 2})
    m = measure(run, cfg)
    assert m.attempts == 2 and not m.noisy
    assert m.latency_ms_p50 == pytest.approx(2.0, abs=0.01)


def test_persistently_noisy_point_is_flagged_with_its_best_attempt() -> None:
    a = [1.0, 9.0] * 3
    b = [1.0, 3.0] * 3  # the least noisy attempt
    c = [1.0, 6.0] * 3
    run = scripted([1.0, 1.0, *a, *b, *c])
    cfg = ProtocolConfig(**{**FAST, "repeats": 6, "min_repeats": 6, "cv_threshold": 0.05, "max_remeasures": 2})
    m = measure(run, cfg)
    assert m.attempts == 3 and m.noisy
    assert m.cv == pytest.approx(coefficient_of_variation(b))
    assert m.latency_ms_p50 == pytest.approx(2.0)


def test_max_point_seconds_stops_after_min_repeats() -> None:
    import time

    def run(n: int) -> float:
        time.sleep(0.02)
        return 1.0 * n

    cfg = ProtocolConfig(**{**FAST, "repeats": 1000, "min_repeats": 3, "max_point_seconds": 0.05})
    m = measure(run, cfg)
    assert 3 <= m.repeats < 10


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


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threads", 0, "protocol.threads"),
        ("warmup", -1, "protocol.warmup"),
        ("min_repeats", 1, "protocol.min_repeats"),
        ("repeats", 2, "protocol.repeats"),
        ("max_point_seconds", 0, "protocol.max_point_seconds"),
        ("cv_threshold", 0, "protocol.cv_threshold"),
        ("max_remeasures", -1, "protocol.max_remeasures"),
        ("rounds", 0, "protocol.rounds"),
        ("pin_cpus", (10_000,), "protocol.pin_cpus"),
    ],
)
def test_protocol_config_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(AnyshapeError, match=message):
        ProtocolConfig(**{field: value})  # type: ignore[arg-type]


def test_protocol_config_round_trips() -> None:
    cfg = ProtocolConfig(threads=1, warmup=4, repeats=9, pin_cpus=(0,))
    assert ProtocolConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AnyshapeError, match="unknown field"):
        ProtocolConfig.from_dict({"nope": 1})


def test_fastest_round_keeps_the_least_disturbed_pass() -> None:
    from profilers.protocol import Measurement, fastest_round

    def m(p50: float, probe: float | None = None) -> Measurement:
        return Measurement(p50 * 0.9, p50, p50 * 1.1, 5, 0.01, False, 1, 1, probe)

    assert fastest_round([m(10.5), m(16.0), m(10.0)]).latency_ms_p50 == 10.0
    assert fastest_round([m(3.0)]).latency_ms_p50 == 3.0
    # with probes, per probe: the 11 ms pass ran while the whole machine was 1.2x slow
    assert fastest_round([m(10.0, 1.0), m(11.0, 1.2)]).latency_ms_p50 == 11.0
    # a memory-bound point (compute share 0.1): the slow cores barely slowed it, the raw 10 ms pass is faster
    assert fastest_round([m(10.0, 1.0), m(11.0, 1.2)], compute_share=0.1).latency_ms_p50 == 10.0
    assert fastest_round([m(10.0, 1.0), m(11.0, 1.2)], compute_share=0.0).latency_ms_p50 == 10.0
    with pytest.raises(ValueError):
        fastest_round([])
    with pytest.raises(ValueError, match="compute_share"):
        fastest_round([m(3.0)], compute_share=1.5)


def test_reference_probe_times_a_warm_matmul(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe must not time the cache misses the sample before it left behind (a cold probe
    read a third slower after a whole-model decode step): one untimed call, then the timed one."""
    import time

    import torch

    from profilers.protocol import ReferenceProbe

    probe = ReferenceProbe(threads=1)
    events: list[str] = []
    real_mm, real_clock = torch.mm, time.perf_counter_ns
    monkeypatch.setattr(torch, "mm", lambda *a, **k: (events.append("mm"), real_mm(*a, **k))[1])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: (events.append("clock"), real_clock())[1])
    assert probe() > 0
    assert events == ["mm", "clock", "mm", "clock"]
    assert probe.describe()["warm"] is True


@pytest.mark.parametrize("count,rounds", [(7, 3), (2, 3), (5, 1), (0, 2)])
def test_pass_schedule_measures_every_pass_once_in_order(count: int, rounds: int) -> None:
    from profilers.protocol import pass_schedule

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


@pytest.mark.parametrize("name", ["stagger", "anchor", "anchor_prefill"])
def test_protocol_switches_must_be_bools(name: str) -> None:
    with pytest.raises(AnyshapeError, match=rf"protocol\.{name}"):
        ProtocolConfig(**{name: "yes"})  # type: ignore[arg-type]


def test_the_anchor_is_timed_after_every_sample_and_divides_a_drift_out() -> None:
    """A drift that slows the point and the anchor alike (30 % over the samples) leaves the ratio
    steady: the attempt is judged by the ratios' CV, so it is not re-measured or flagged."""
    from profilers.protocol import Anchor, measure

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

    m = measure(run, config, anchor=Anchor("whole-model|decode|anchor", anchor_run, calls=2))
    assert m.anchor_ratio == pytest.approx(2.5) and m.cv < 1e-9 and not m.noisy and m.attempts == 1
    assert m.anchor_ms == pytest.approx(percentile([4.0 * 1.04 ** (i + 2) for i in range(8)], 50))
    assert order[1:] == ["sample", "anchor"] * 8  # after the warm-up call: each sample, then its anchor
    raw = measure(run, config)  # unanchored, the drift makes the same point noisy
    assert raw.anchor_ratio is None and raw.cv > 0.05


def test_probe_first_times_the_probe_before_an_anchored_points_warm_up_not_between_its_samples() -> None:
    """An anchored row scales by its anchor, so ``probe_first`` keeps the (other runtime's) probe
    away from the samples; the probe still reports the host's speed. Unanchored, it is ignored."""
    from profilers.protocol import PROBES_FIRST, Anchor, measure

    config = ProtocolConfig(threads=1, warmup=1, repeats=6, min_repeats=6, min_sample_ms=0.0)
    order: list[str] = []

    def run(n: int) -> float:
        order.append("sample")
        return 10.0 * n

    def probe() -> float:
        order.append("probe")
        return 0.5 + 0.1 * order.count("probe")

    anchor = Anchor("whole-model|decode|anchor", lambda n: order.append("anchor") or 4.0 * n, calls=1)
    m = measure(run, config, probe, anchor, probe_first=True)
    assert order == ["probe"] * PROBES_FIRST + ["sample"] + ["sample", "anchor"] * 6  # probes, warm-up, samples
    assert m.reference_ms == pytest.approx(0.7) and m.anchor_ratio == pytest.approx(2.5)
    order.clear()
    m = measure(run, config, probe, probe_first=True)  # no anchor: the probe is the row's reference, beside the samples
    assert order == ["sample"] + ["sample", "probe"] * 6 and m.reference_ms is not None


def test_kept_pass_takes_the_median_anchor_ratio_else_the_fastest() -> None:
    from profilers.protocol import Measurement, kept_pass

    def m(p50: float, ratio: float | None = None) -> Measurement:
        return Measurement(p50, p50, p50, 5, 0.01, False, 1, 1, anchor_ms=None if ratio is None else p50 / ratio, anchor_ratio=ratio)

    assert kept_pass([m(12.0, 2.0), m(9.0, 2.6), m(10.0, 2.2)]).anchor_ratio == 2.2  # the middle ratio, not the fastest
    assert kept_pass([m(12.0, 2.0), m(9.0, 2.6)]).anchor_ratio == 2.0  # even count: the lower middle
    assert kept_pass([m(12.0), m(9.0), m(10.0)]).latency_ms_p50 == 9.0  # unanchored: the fastest pass
    assert kept_pass([m(12.0, 2.0), m(9.0)]).latency_ms_p50 == 9.0  # mixed: as if unanchored


def test_kept_pass_takes_the_middle_pass_where_asked() -> None:
    from profilers.protocol import Measurement, kept_pass

    def m(p50: float, reference: float | None = None, ratio: float | None = None) -> Measurement:
        return Measurement(p50 * 0.9, p50, p50 * 1.1, 5, 0.01, False, 1, 1, reference, 1.0 if ratio else None, ratio)

    passes = [m(10.0), m(7.0), m(10.4), m(10.2)]  # a fast moment at 7.0
    assert kept_pass(passes).latency_ms_p50 == 7.0
    assert kept_pass(passes, middle=True).latency_ms_p50 == 10.0  # the lower middle of four
    # judged at the run's speed: p50 / probe ** share
    probed = [m(10.0, 1.0), m(12.0, 1.5), m(11.0, 1.0)]  # 10.0, 8.0, 11.0 in full; 10.0, 12.0, 11.0 raw
    assert kept_pass(probed, 1.0, middle=True).latency_ms_p50 == 10.0
    assert kept_pass(probed, 0.0, middle=True).latency_ms_p50 == 11.0
    assert kept_pass([m(12.0, ratio=2.0), m(9.0, ratio=2.6), m(10.0, ratio=2.2)], middle=True).anchor_ratio == 2.2
