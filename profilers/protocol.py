"""The one measurement model every profiler, ``verify``, ``calibrate`` and the predictor share.

A profiler hands :func:`measure` a ``run(n)`` callable that executes the block ``n`` times
and returns the elapsed milliseconds (wall clock on CPU, CUDA events on GPU). How a point is
timed is a named preset (:func:`load_protocol`: ``quiet``, ``shared-vm``, ``live`` or a YAML
file), shipped as ``profilers/presets/<name>.yaml``:

1. pin the process to ``pin_cpus`` if asked, and keep garbage collection off while timing;
2. warm up (``warmup`` calls) and fold ``calls_per_sample`` calls into one sample so that it
   lasts at least ``min_sample_ms`` (timer resolution and call overhead stop mattering);
3. take up to ``repeats`` samples (at least ``min_repeats``; fewer once the point has used
   ``max_point_seconds``) and report p10 / p50 / p90 of the per-call latency;
4. a point whose samples spread more than ``cv_threshold`` (std / mean) is timed again (up to
   ``max_remeasures`` more times); the steadiest attempt is kept, flagged ``noisy`` if still above;
5. a table run makes ``rounds`` passes over its points (``stagger``: a point's passes one point
   apart instead, for graphs too big to keep) and keeps each point's middle pass
   (:func:`median_pass`);
6. one speed reference, or none (``reference``). ``none``: the row is the raw time. ``anchor``:
   a fixed whole-model step of the same workload (:func:`profilers.workload.anchor_point`) is
   timed after every sample, and the row is the median of the per-sample ratios times the
   anchor's median over the whole run. :class:`MeasurementModel` is that rule, built from a
   table's meta by everyone who needs it; nothing else rescales a measurement.

Thread counts are set by the profiler (torch / ONNX Runtime) from ``threads`` and recorded.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError

#: ``run(n)`` executes the block ``n`` times and returns the elapsed time in milliseconds.
RunFn = Callable[[int], float]

#: Upper bound on calls folded into one sample (a 1 µs op at min_sample_ms=1 needs 1000).
MAX_CALLS_PER_SAMPLE = 10_000
#: The speed references a protocol may use.
REFERENCES = ("none", "anchor")
#: The preset ``anyshape profile`` uses when none is named.
DEFAULT_PRESET = "quiet"
#: The preset ``anyshape calibrate`` and ``verify`` (of a calibrated prediction) time whole models with.
LIVE_PRESET = "live"


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ProtocolConfig:
    """How every point is timed; recorded in a table's meta and checked when a run resumes."""

    name: str = field(default="custom", metadata={"help": "the preset (or file) this protocol came from"})
    reference: str = field(default="none", metadata={"help": "speed reference: none (raw time) | anchor (ratio to a fixed step)"})
    rounds: int = field(default=3, metadata={"help": "passes over all points; each point keeps its middle pass"})
    threads: int = field(default_factory=_default_threads, metadata={"help": "intra-op threads (torch / ONNX Runtime)"})
    warmup: int = field(default=3, metadata={"help": "untimed calls before the samples"})
    repeats: int = field(default=15, metadata={"help": "most samples per point"})
    min_repeats: int = field(default=5, metadata={"help": "fewest samples per point, even past max_point_seconds"})
    max_point_seconds: float = field(default=2.0, metadata={"help": "stop sampling a point after this (once min_repeats)"})
    min_sample_ms: float = field(default=2.0, metadata={"help": "fold calls into one sample until it lasts this long"})
    cv_threshold: float = field(default=0.10, metadata={"help": "a point with std/mean above this is re-measured"})
    max_remeasures: int = field(default=1, metadata={"help": "extra attempts for a noisy point before flagging it"})
    spinning: bool = field(default=True, metadata={"help": "ONNX Runtime: intra-op threads spin between runs (its default)"})
    stagger: bool = field(
        default=False,
        metadata={"help": "a point's passes one point apart, its block kept loaded, instead of whole passes over the "
                          "table: for graphs too big to keep on disk for a later pass"},
    )
    pin_cpus: tuple[int, ...] | None = field(default=None, metadata={"help": "CPUs to pin the process to (Linux)"})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AnyshapeError(f"protocol.name is {self.name!r}; it must be a non-empty string")
        if self.reference not in REFERENCES:
            raise AnyshapeError(f"protocol.reference is {self.reference!r}; allowed: {', '.join(REFERENCES)}")
        for name in ("threads", "warmup", "repeats", "min_repeats", "max_remeasures", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise AnyshapeError(f"protocol.{name} is {value!r}; it must be an integer")
        for name in ("max_point_seconds", "min_sample_ms", "cv_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AnyshapeError(f"protocol.{name} is {value!r}; it must be a number")
        if self.threads < 1:
            raise AnyshapeError(f"protocol.threads is {self.threads}; it must be >= 1")
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
        for name in ("spinning", "stagger"):
            if not isinstance(getattr(self, name), bool):
                raise AnyshapeError(f"protocol.{name} is {getattr(self, name)!r}; it must be true or false")
        if self.pin_cpus is not None:
            pins = tuple(self.pin_cpus) if isinstance(self.pin_cpus, (list, tuple)) else None
            if not pins or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in pins):
                raise AnyshapeError(f"protocol.pin_cpus is {self.pin_cpus!r}; it must be a list of CPU numbers")
            object.__setattr__(self, "pin_cpus", tuple(sorted(set(pins))))

    def check_here(self) -> None:
        """Refuse a thread count or CPU pins this machine cannot give (a table's record may come from a bigger one)."""
        cores = os.cpu_count() or 1
        if self.threads > 4 * cores:
            raise AnyshapeError(f"protocol.threads is {self.threads}; allowed range 1..{4 * cores} on this machine")
        if self.pin_cpus is not None and any(c >= cores for c in self.pin_cpus):
            raise AnyshapeError(f"protocol.pin_cpus is {list(self.pin_cpus)}; CPUs must be in 0..{cores - 1} on this machine")

    @property
    def anchored(self) -> bool:
        """Every point is timed beside its workload's anchor (``reference: anchor``)."""
        return self.reference == "anchor"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pin_cpus"] = None if self.pin_cpus is None else list(self.pin_cpus)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "protocol") -> ProtocolConfig:
        if not isinstance(data, Mapping):
            raise AnyshapeError(f"{where} must be a mapping of protocol fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnyshapeError(f"{where} has unknown field(s) {unknown}; allowed: {', '.join(sorted(known))}")
        return cls(**dict(data))


# --------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """The shipped presets (``profilers/presets/*.yaml``), sorted."""
    folder = resources.files("profilers").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of a shipped preset (its header says which command uses it)."""
    if name not in preset_names():
        raise AnyshapeError(f"unknown protocol preset {name!r}; choose {', '.join(preset_names())} or give a YAML file")
    return resources.files("profilers").joinpath("presets", f"{name}.yaml").read_text()


def load_protocol(spec: str | ProtocolConfig | None = None, **overrides: Any) -> ProtocolConfig:
    """A protocol from a preset name (``quiet``, ``shared-vm``, ``live``) or a YAML / JSON file.

    A file holds protocol fields; ``extends: <preset>`` starts from that preset (default
    ``quiet``), so a file needs only what it changes. ``overrides`` (``threads``, ``pin_cpus``:
    the machine's, not the preset's) win over both; None values are ignored.
    """
    import yaml

    if isinstance(spec, ProtocolConfig):
        base = spec.to_dict()
    else:
        spec = spec or DEFAULT_PRESET
        if spec in preset_names():
            base = {**_parse_preset(preset_text(spec), f"protocol preset {spec}"), "name": spec}
        else:
            path = Path(spec)
            if not path.is_file():
                raise AnyshapeError(f"--protocol {spec}: no such preset or file; presets: {', '.join(preset_names())}")
            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise AnyshapeError(f"cannot read protocol file {path}: {first}") from None
            if not isinstance(data, dict):
                raise AnyshapeError(f"protocol file {path} must hold a mapping of protocol fields (reference, rounds, ...)")
            parent = str(data.pop("extends", DEFAULT_PRESET))
            if parent not in preset_names():
                raise AnyshapeError(f"protocol file {path}: extends {parent!r}; presets: {', '.join(preset_names())}")
            base = {**_parse_preset(preset_text(parent), f"protocol preset {parent}"), **data, "name": str(data.get("name") or path.name)}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return ProtocolConfig.from_dict(base, where=f"protocol {base.get('name')}")


def _parse_preset(text: str, where: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise AnyshapeError(f"{where} must hold a mapping of protocol fields")
    return data


def live_protocol(**overrides: Any) -> ProtocolConfig:
    """The ``live`` preset: how ``anyshape calibrate`` and ``verify`` (of a calibrated prediction) time a whole model."""
    return load_protocol(LIVE_PRESET, **overrides)


# --------------------------------------------------------------------------- measurements


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
    #: Median per-call time of the workload's anchor timed after each sample (None: not anchored).
    anchor_ms: float | None = None
    #: Median of the per-sample ratios ``sample / anchor`` (per call): the point's time in anchor steps.
    anchor_ratio: float | None = None

    def scaled(self, factor: float) -> Measurement:
        """The same measurement with its latencies multiplied by ``factor``."""
        return replace(self, latency_ms_p10=self.latency_ms_p10 * factor, latency_ms_p50=self.latency_ms_p50 * factor,
                       latency_ms_p90=self.latency_ms_p90 * factor)

    @property
    def judged(self) -> float:
        """What passes are ordered by: the anchor ratio where anchored, else the raw p50."""
        return self.anchor_ratio if self.anchor_ratio is not None else self.latency_ms_p50


@dataclass(frozen=True)
class MeasurementModel:
    """How a table's rows relate to a stopwatch: the one rule, built from the table's meta by everyone.

    ``protocol`` is how the table's points were timed (verify times a shape the same way);
    ``baselines`` (``reference: anchor``) the median time of each anchor over the table's run,
    by anchor point key. A row is :meth:`row` of a point's kept pass; :meth:`at_table_speed` is
    the same number for a measurement taken later (``anyshape verify``), comparable with a
    prediction from the table. With ``reference: none`` both are the raw time.
    """

    protocol: ProtocolConfig
    baselines: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol.anchored and not self.baselines:
            raise AnyshapeError("an anchored measurement model needs the anchors' baselines (meta.json measurement.baseline_ms)")
        if not self.protocol.anchored and self.baselines:
            raise AnyshapeError(f"protocol {self.protocol.name} has reference none, yet anchor baselines were given")
        bad = [k for k, v in self.baselines.items() if not (isinstance(v, (int, float)) and v > 0)]
        if bad:
            raise AnyshapeError(f"anchor baseline of {bad[0]} is {self.baselines[bad[0]]!r}; it must be a positive number")

    def row(self, m: Measurement, anchor: str | None = None) -> Measurement:
        """``m`` as a table row holds it: raw, or ``ratio * baseline[anchor]`` (p10 and p90 move with p50)."""
        if not self.protocol.anchored:
            return m
        if anchor is None or anchor not in self.baselines or m.anchor_ratio is None:
            raise AnyshapeError(f"protocol {self.protocol.name} anchors every point, but this measurement has no "
                                f"ratio to anchor {anchor!r} of the table")
        return m.scaled(m.anchor_ratio * self.baselines[anchor] / m.latency_ms_p50)

    def at_table_speed(self, m: Measurement, anchor: str | None = None) -> float:
        """``m``'s p50 as the table would hold it (the number to set beside the table's prediction)."""
        return self.row(m, anchor).latency_ms_p50

    def describe(self) -> str:
        if self.protocol.anchored:
            return f"{self.protocol.name}: rows = median ratio to the workload's anchor x the anchor's median over the run"
        return f"{self.protocol.name}: rows = raw time, middle of {self.protocol.rounds} passes"

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.protocol.reference, "baseline_ms": {k: round(float(v), 6) for k, v in sorted(self.baselines.items())}}


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


def measure(run: RunFn, config: ProtocolConfig, anchor: Callable[[], float] | None = None) -> Measurement:
    """Time one point with the protocol above; ``run(n)`` returns elapsed ms for ``n`` calls.

    With an ``anchor`` (an :class:`Anchor`: per-call ms of one timing) it is timed after every
    sample, and ``anchor_ms`` and ``anchor_ratio`` (the median of ``sample / anchor``) come back;
    the attempt kept is then judged by the CV of the ratios (the anchor takes the drift out).
    The latencies themselves are left raw.
    """
    with pinned(config.pin_cpus), gc_disabled():
        calls = calibrate(run, config)
        best: tuple[float, list[float], list[float]] | None = None
        attempts = 0
        for _ in range(1 + config.max_remeasures):
            attempts += 1
            samples, anchors = _samples(run, calls, config, anchor)
            cv = coefficient_of_variation([s / a for s, a in zip(samples, anchors)] or samples)
            if best is None or cv < best[0]:
                best = (cv, samples, anchors)
            if cv <= config.cv_threshold:
                break
    assert best is not None
    cv, samples, anchors = best
    return Measurement(
        latency_ms_p10=percentile(samples, 10),
        latency_ms_p50=percentile(samples, 50),
        latency_ms_p90=percentile(samples, 90),
        repeats=len(samples),
        cv=cv,
        noisy=cv > config.cv_threshold,
        calls_per_sample=calls,
        attempts=attempts,
        anchor_ms=percentile(anchors, 50) if anchors else None,
        anchor_ratio=percentile([s / a for s, a in zip(samples, anchors)], 50) if anchors else None,
    )


def median_pass(passes: Sequence[Measurement]) -> Measurement:
    """The pass a point keeps: the middle one by :attr:`Measurement.judged` (the lower middle of an even count).

    A burst of load slows a pass as a whole (p10 included, which no statistic inside the pass
    sees); on a shared machine the speed also has fast moments, so the middle pass, not the
    fastest, is the least biased pick. The spread of the passes is kept in the table's meta.
    """
    if not passes:
        raise ValueError("median_pass needs at least one measurement")
    ordered = sorted(passes, key=lambda m: m.judged)
    return ordered[(len(ordered) - 1) // 2]


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


def _samples(run: RunFn, calls: int, config: ProtocolConfig,
             anchor: Callable[[], float] | None = None) -> tuple[list[float], list[float]]:
    samples: list[float] = []
    anchors: list[float] = []
    start = time.perf_counter()
    for i in range(config.repeats):
        samples.append(run(calls) / calls)
        if anchor is not None:
            anchors.append(anchor())
        if i + 1 >= config.min_repeats and time.perf_counter() - start > config.max_point_seconds:
            break
    return samples, anchors


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
