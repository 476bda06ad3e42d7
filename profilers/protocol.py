"""The one measurement protocol every profiler uses.

A profiler hands :func:`measure` a ``run(n)`` callable that executes the block ``n`` times
and returns the elapsed milliseconds (wall clock on CPU, CUDA events on GPU). The protocol:

1. pins the process to ``pin_cpus`` if asked, and turns garbage collection off while timing;
2. warms up (``warmup`` single calls) and picks ``calls_per_sample`` so that one sample lasts
   at least ``min_sample_ms`` (timer resolution and call overhead stop mattering);
3. takes up to ``repeats`` samples (at least ``min_repeats``; stops early once the point has
   used ``max_point_seconds``) and reports p10 / p50 / p90 of the per-call latency;
4. checks the coefficient of variation (std / mean) of the samples: above ``cv_threshold`` the
   point is re-measured (up to ``max_remeasures`` more times); the attempt with the lowest CV is
   kept and, if even that one is above the threshold, the point is flagged ``noisy``;
5. a table run makes ``rounds`` passes over all its points and keeps, per point, its fastest
   pass (:func:`fastest_round`; anchored points their middle pass, :func:`kept_pass`): a burst of load that inflates a pass of a point as a whole
   (p10 included, which no statistic inside the pass can see) is dropped. With ``stagger`` a
   point's passes come one point apart instead (:func:`pass_schedule`), so a runtime that must
   rebuild a point for every pass (ONNX Runtime, graphs too big to keep on disk) keeps it
   loaded. A single measurement (``anyshape verify``) repeats the point instead;
6. on a CPU, with ``reference``, a fixed matmul (:class:`ReferenceProbe`) is timed after every
   sample; a table scales the compute share of each point by ``baseline / reference``
   (baseline: the median probe of the whole run, kept in meta.json; see
   ``profilers.run.compute_share``) so that a slow or fast moment of a shared machine does not
   end up in the table. Raw and scaled numbers are both kept;
7. with ``anchor``, a decode step is timed beside a fixed decode step of the same workload (an
   :class:`Anchor`, kept loaded for the whole run) after every sample: the row becomes the median
   of the per-sample ratios times the anchor's median over the run. A memory-bound step drifts
   with the machine's memory over minutes, which a matmul in cache does not follow and work of
   the same kind does (see docs/PROFILING.md); prefill keeps the probe, unless
   ``anchor_prefill``: then a prefill step is timed beside a fixed prefill step the same way.
   On a noisy host (a VM whose reference probe spread 37-45 % over a run, which the probe's
   scaling followed too loosely) that took the held-out torch prefill shapes from 75-79 % to 100 %
   within 10 % (MiniLM, the reference decoder; docs/PROFILING.md).

Thread counts are set by the profiler (torch / ONNX Runtime) from ``threads`` and recorded.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nas.errors import AnyshapeError

#: ``run(n)`` executes the block ``n`` times and returns the elapsed time in milliseconds.
RunFn = Callable[[int], float]

#: Upper bound on calls folded into one sample (a 1 µs op at min_sample_ms=1 needs 1000).
MAX_CALLS_PER_SAMPLE = 10_000
#: Probe timings of an anchored point measured with ``probe_first`` (before its warm-up).
PROBES_FIRST = 3


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ProtocolConfig:
    """How every point is timed; recorded in meta.json and checked when a run resumes."""

    threads: int = field(default_factory=_default_threads, metadata={"help": "intra-op threads (torch / ONNX Runtime)"})
    warmup: int = field(default=3, metadata={"help": "untimed calls before the samples"})
    repeats: int = field(default=15, metadata={"help": "most samples per point"})
    min_repeats: int = field(default=5, metadata={"help": "fewest samples per point, even past max_point_seconds"})
    max_point_seconds: float = field(default=2.0, metadata={"help": "stop sampling a point after this (once min_repeats)"})
    min_sample_ms: float = field(default=2.0, metadata={"help": "fold calls into one sample until it lasts this long"})
    cv_threshold: float = field(default=0.10, metadata={"help": "a point with std/mean above this is re-measured"})
    max_remeasures: int = field(default=1, metadata={"help": "extra attempts for a noisy point before flagging it"})
    rounds: int = field(default=3, metadata={"help": "passes over all points; a point keeps its fastest pass (drops bursts of load)"})
    reference: bool = field(
        default=True, metadata={"help": "CPU: time a fixed matmul beside the samples and scale every point to the run's typical speed"}
    )
    spinning: bool = field(
        default=True,
        metadata={"help": "ONNX Runtime: intra-op threads spin between runs (its default); off lets the reference probe run beside it"},
    )
    stagger: bool = field(
        default=False,
        metadata={"help": "measure each point's passes one point apart, its block kept loaded, instead of in whole passes "
                          "over the table: for graphs too big to keep on disk for a later pass"},
    )
    anchor: bool = field(
        default=False,
        metadata={"help": "decode: time a fixed decode step of the same workload beside every sample and keep the ratio "
                          "(follows the machine's memory drift, which the probe does not)"},
    )
    anchor_prefill: bool = field(
        default=False,
        metadata={"help": "prefill too: time a fixed prefill step of the same workload beside every sample and keep the "
                          "ratio instead of scaling by the probe (for noisy hosts; builds took 1.25-1.3x as long)"},
    )
    pin_cpus: tuple[int, ...] | None = field(default=None, metadata={"help": "CPUs to pin the process to (Linux)"})

    def __post_init__(self) -> None:
        cores = os.cpu_count() or 1
        if not 1 <= self.threads <= 4 * cores:
            raise AnyshapeError(f"protocol.threads is {self.threads}; allowed range 1..{4 * cores} on this machine")
        if self.warmup < 0:
            raise AnyshapeError(f"protocol.warmup is {self.warmup}; it must be >= 0")
        if self.min_repeats < 2:
            raise AnyshapeError(f"protocol.min_repeats is {self.min_repeats}; it must be >= 2 (percentiles need samples)")
        if self.repeats < self.min_repeats:
            raise AnyshapeError(f"protocol.repeats is {self.repeats}; it must be >= min_repeats ({self.min_repeats})")
        if not self.max_point_seconds > 0:
            raise AnyshapeError(f"protocol.max_point_seconds is {self.max_point_seconds}; it must be > 0")
        if not self.min_sample_ms >= 0:
            raise AnyshapeError(f"protocol.min_sample_ms is {self.min_sample_ms}; it must be >= 0")
        if not self.cv_threshold > 0:
            raise AnyshapeError(f"protocol.cv_threshold is {self.cv_threshold}; it must be > 0")
        if self.max_remeasures < 0:
            raise AnyshapeError(f"protocol.max_remeasures is {self.max_remeasures}; it must be >= 0")
        if self.rounds < 1:
            raise AnyshapeError(f"protocol.rounds is {self.rounds}; it must be >= 1")
        for name in ("reference", "spinning", "stagger", "anchor", "anchor_prefill"):
            if not isinstance(getattr(self, name), bool):
                raise AnyshapeError(f"protocol.{name} is {getattr(self, name)!r}; it must be true or false")
        if self.pin_cpus is not None:
            if not self.pin_cpus or any(not 0 <= c < cores for c in self.pin_cpus):
                raise AnyshapeError(f"protocol.pin_cpus is {list(self.pin_cpus)}; CPUs must be in 0..{cores - 1}")
            object.__setattr__(self, "pin_cpus", tuple(sorted(set(self.pin_cpus))))

    def anchored(self, phase: str) -> bool:
        """Whether points of ``phase`` are timed beside an anchor (``anchor``: decode, ``anchor_prefill``: prefill)."""
        return self.anchor if phase == "decode" else self.anchor_prefill

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pin_cpus"] = None if self.pin_cpus is None else list(self.pin_cpus)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtocolConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnyshapeError(f"protocol has unknown field(s) {unknown}; allowed: {', '.join(sorted(known))}")
        data = dict(data)
        if data.get("pin_cpus") is not None:
            data["pin_cpus"] = tuple(data["pin_cpus"])
        return cls(**data)


def live_protocol(**overrides: Any) -> ProtocolConfig:
    """How ``anyshape calibrate`` and ``verify`` (of a calibrated prediction) time a whole model: what a user sees.

    Raw wall-clock time, no reference probe and no anchor (nothing rescales it), and ``rounds``
    passes whose median is kept: calibrate interleaves its shapes' passes
    (:func:`nas.predictor.calibration.measure_interleaved`), verify times one built model that
    many times (:meth:`profilers._base.BaseProfiler.measure_rounds` with ``middle=True``). On a
    shared VM a pass lasts under a second and the machine's speed moves by 10-20 % over seconds;
    five passes let the median span several of those moments.
    """
    return ProtocolConfig(**{"reference": False, "rounds": 5, **overrides})


@dataclass(frozen=True)
class Measurement:
    """The per-call latency of one point, in milliseconds."""

    latency_ms_p10: float
    latency_ms_p50: float
    latency_ms_p90: float
    repeats: int
    cv: float
    noisy: bool
    calls_per_sample: int
    attempts: int
    #: Median time of the reference matmul probed between this point's samples (None: no probe).
    reference_ms: float | None = None
    #: Median per-call time of the workload's anchor timed after each sample (None: not anchored).
    anchor_ms: float | None = None
    #: Median of the per-sample ratios ``sample / anchor`` (per call): the point's time in anchor steps.
    anchor_ratio: float | None = None

    def scaled(self, factor: float) -> Measurement:
        """The same measurement with its latencies multiplied by ``factor`` (speed normalisation)."""
        return replace(self, latency_ms_p10=self.latency_ms_p10 * factor, latency_ms_p50=self.latency_ms_p50 * factor,
                       latency_ms_p90=self.latency_ms_p90 * factor)


@dataclass(frozen=True)
class Anchor:
    """A fixed point of the same kind as the ones measured, kept loaded and timed after every sample.

    ``run`` executes it ``n`` times (a profiler's ``run(n)``); ``calls`` per timing (enough for
    ``min_sample_ms``, found once when it is built); ``key`` names its point in meta.json.
    """

    key: str
    run: RunFn
    calls: int

    def __call__(self) -> float:
        """Per-call milliseconds of one timing."""
        return self.run(self.calls) / self.calls


class ReferenceProbe:
    """A fixed fp32 matmul, timed between a point's samples: how fast is this machine right now?

    On shared virtual machines the whole CPU slows down and speeds up by 10-20 % over seconds
    (another tenant, the host's clock), which no number of samples of one point averages out.
    Every op slows down together, though, so ``latency * baseline / reference`` is steady: on the
    2-core EPYC VM the spread of a MiniLM forward pass over 25 s fell from 7 % to under 2 % (see
    docs/PROFILING.md). The kernel is fixed (``SIZE``), never tuned to the machine, so a table and a
    later ``anyshape verify`` on the same machine probe the same work.

    The matmul runs once untimed before the timed call, so the probe times the machine and not
    the state the sample left it in: right after a whole Qwen2.5-0.5B decode step (2 GB of
    weights streamed through the caches) a cold probe read 0.98 ms against 0.73 ms warm, and
    after a small attention block 0.76 against 0.73 (median of 40, 2-core EPYC VM). A cold probe
    scaled big points down by up to a third, more the more memory they touched.
    """

    SIZE = (256, 512, 512)  # (m, k, n): about 0.13 GFLOP, 0.72-1.05 ms (p10-p90) on the 2-core EPYC VM

    def __init__(self, threads: int) -> None:
        import torch

        self.threads = threads
        m, k, n = self.SIZE
        gen = torch.Generator().manual_seed(0)
        self._a = torch.randn(m, k, generator=gen)
        self._b = torch.randn(k, n, generator=gen)
        self._out = torch.empty(m, n)

    def __call__(self) -> float:
        import torch

        before = torch.get_num_threads()
        if before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            torch.mm(self._a, self._b, out=self._out)  # warm: operands in cache, threads awake
            start = time.perf_counter_ns()
            torch.mm(self._a, self._b, out=self._out)
            return (time.perf_counter_ns() - start) / 1e6
        finally:
            if before != self.threads:
                torch.set_num_threads(before)

    def describe(self) -> dict[str, Any]:
        m, k, n = self.SIZE
        return {"kernel": f"torch.mm fp32 ({m}x{k}) @ ({k}x{n})", "threads": self.threads, "warm": True}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q is {q}; it must be in 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over mean (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    if mean <= 0:
        return math.inf
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var) / mean


def measure(run: RunFn, config: ProtocolConfig, probe: Callable[[], float] | None = None,
            anchor: Callable[[], float] | None = None, *, probe_first: bool = False) -> Measurement:
    """Time one point with the protocol above; ``run(n)`` returns elapsed ms for ``n`` calls.

    With a ``probe`` (a :class:`ReferenceProbe`), the probe runs once after every sample and its
    median is returned as ``reference_ms``; with an ``anchor`` (an :class:`Anchor`: per-call ms of
    one timing), it is timed after every sample too, and ``anchor_ms`` and ``anchor_ratio`` (the
    median of ``sample / anchor``) come back. The latencies themselves are left raw. The attempt
    kept is judged by the CV of the ratios where anchored (the anchor takes the drift out).

    ``probe_first`` (anchored points only) times the probe :data:`PROBES_FIRST` times before the
    warm-up instead of between the samples: the anchor is the row's speed reference, the probe
    then only reports the host's speed (``load.probe_spread``), and a runtime other than the
    probe's own can be disturbed by it (:attr:`profilers._base.BaseProfiler.probe_beside_samples`).
    """
    with pinned(config.pin_cpus), gc_disabled():
        early = [probe() for _ in range(PROBES_FIRST)] if probe is not None and probe_first and anchor is not None else []
        if early:
            probe = None
        calls = calibrate(run, config)
        best: tuple[float, list[float], list[float], list[float]] | None = None
        attempts = 0
        for _ in range(1 + config.max_remeasures):
            attempts += 1
            samples, probes, anchors = _samples(run, calls, config, probe, anchor)
            probes = probes or early
            cv = coefficient_of_variation([s / a for s, a in zip(samples, anchors)] or samples)
            if best is None or cv < best[0]:
                best = (cv, samples, probes, anchors)
            if cv <= config.cv_threshold:
                break
    assert best is not None
    cv, samples, probes, anchors = best
    return Measurement(
        latency_ms_p10=percentile(samples, 10),
        latency_ms_p50=percentile(samples, 50),
        latency_ms_p90=percentile(samples, 90),
        repeats=len(samples),
        cv=cv,
        noisy=cv > config.cv_threshold,
        calls_per_sample=calls,
        attempts=attempts,
        reference_ms=percentile(probes, 50) if probes else None,
        anchor_ms=percentile(anchors, 50) if anchors else None,
        anchor_ratio=percentile([s / a for s, a in zip(samples, anchors)], 50) if anchors else None,
    )


def fastest_round(rounds: Sequence[Measurement], compute_share: float = 1.0) -> Measurement:
    """The pass with the lowest p50 at the run's machine speed: ``p50 / reference ** compute_share`` where probed.

    For work the probe speaks for, interference mostly adds time: on a shared machine a pass is
    either clean or slowed by another tenant, for a second or for a minute (a MiniLM forward pass
    measured five times over six minutes spread by 5 % even after the probe's correction, and the
    slow passes came in runs). The fastest pass is the one least disturbed, the same argument as
    ``timeit``'s "use the minimum"; the spread of the passes is kept in meta.json. A memory-bound
    decode step also has fast moments (ONNX Runtime Qwen2.5-0.5B, 2026-11-29: the minimum call
    was the worst statistic), which the minimum keeps: anchor those (:func:`kept_pass`).

    ``compute_share`` is the point's share of time the probe speaks for (``profilers.run.compute_share``,
    the rule a table scales its rows by): a memory-bound decode step is judged nearly raw, since
    a busy moment of the cores, which the probe times, barely slows it.
    """
    if not rounds:
        raise ValueError("fastest_round needs at least one measurement")
    if not 0.0 <= compute_share <= 1.0:
        raise ValueError(f"compute_share is {compute_share}; it must be in 0..1")
    return min(rounds, key=lambda m: at_machine_speed(m, compute_share))


def kept_pass(rounds: Sequence[Measurement], compute_share: float = 1.0, *, middle: bool = False) -> Measurement:
    """The pass a table (or verify) keeps: the middle one where anchored or ``middle``, else :func:`fastest_round`.

    Anchored passes differ by what is left once the drift is divided out, noise that goes both
    ways (a burst can hit the sample or the anchor), so the middle ratio is kept, not the lowest
    (lower middle for an even count). ``middle`` keeps the middle pass at the run's speed for
    staggered runs (``protocol.stagger``): there the probe-scaled passes had low outliers as well
    as high ones, and the fastest pass was the noisiest pick (docs/BENCHMARKS.md: on three
    staggered builds of the onnxruntime Qwen2.5-0.5B table, the whole-model prefill rows left
    3.5 / 3.9 / 2.3 % around a linear fit as the fastest pass, 1.9 / 2.4 / 1.4 % as the middle).
    """
    if rounds and all(m.anchor_ratio is not None for m in rounds):
        judged: Callable[[Measurement], float] = lambda m: float(m.anchor_ratio or 0.0)  # noqa: E731
    elif middle and rounds:
        judged = lambda m: at_machine_speed(m, compute_share)  # noqa: E731
    else:
        return fastest_round(rounds, compute_share)
    ordered = sorted(rounds, key=judged)
    return ordered[(len(ordered) - 1) // 2]


def at_machine_speed(m: Measurement, compute_share: float = 1.0) -> float:
    """``m``'s p50 per reference probe, for its compute share (the raw p50 where it was not probed)."""
    return m.latency_ms_p50 / m.reference_ms**compute_share if m.reference_ms else m.latency_ms_p50


def pass_schedule(count: int, rounds: int, stagger: bool) -> Iterator[tuple[int, int]]:
    """The order of a table run's measurements: ``(pass, point index)`` pairs, every pass of every point once.

    Whole passes over the table by default, so that a point's passes lie a whole pass apart. With
    ``stagger``, step ``j`` measures pass 0 of point ``j``, pass 1 of point ``j - 1`` and so on: a
    point's passes lie one point apart (on ONNX Runtime Qwen2.5-0.5B: one 10-50 s export apart)
    and at most ``rounds`` points are loaded at once. Pass ``r`` of a point always comes after its
    pass ``r - 1``.
    """
    if not stagger:
        for r in range(rounds):
            for i in range(count):
                yield r, i
        return
    for step in range(count + rounds - 1):
        for r in range(rounds):
            if 0 <= step - r < count:
                yield r, step - r


def calibrate(run: RunFn, config: ProtocolConfig) -> int:
    """Warm up and return how many calls make one sample of at least ``min_sample_ms``."""
    fastest = math.inf
    for _ in range(max(config.warmup, 1)):
        fastest = min(fastest, run(1))
    if config.min_sample_ms <= 0 or fastest >= config.min_sample_ms:
        return 1
    return min(MAX_CALLS_PER_SAMPLE, math.ceil(config.min_sample_ms / max(fastest, 1e-6)))


def _samples(run: RunFn, calls: int, config: ProtocolConfig, probe: Callable[[], float] | None = None,
             anchor: Callable[[], float] | None = None) -> tuple[list[float], list[float], list[float]]:
    samples: list[float] = []
    probes: list[float] = []
    anchors: list[float] = []
    start = time.perf_counter()
    for i in range(config.repeats):
        samples.append(run(calls) / calls)
        if anchor is not None:
            anchors.append(anchor())
        if probe is not None:
            probes.append(probe())
        if i + 1 >= config.min_repeats and time.perf_counter() - start > config.max_point_seconds:
            break
    return samples, probes, anchors


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    """Collect the young generations, then keep the garbage collector off while timing.

    (A full collection takes ~0.3 s with torch and transformers loaded; the block builder does one
    when it drops a model.)
    """
    was_enabled = gc.isenabled()
    gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Pin this process to ``cpus`` (Linux ``sched_setaffinity``) for the block; no-op for None."""
    if cpus is None:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise AnyshapeError("CPU pinning (--pin-cpus) needs Linux sched_setaffinity; leave it out on this OS")
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as e:
        raise AnyshapeError(f"cannot pin to CPUs {list(cpus)}: {e.strerror}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wall_clock_ms(call: Callable[[], Any]) -> RunFn:
    """A ``run(n)`` for synchronous work timed with ``perf_counter_ns``."""

    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return (time.perf_counter_ns() - start) / 1e6

    return run
