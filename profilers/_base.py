"""The profiler interface: one small class per runtime behind :class:`BaseProfiler`.

A profiler turns a block point into a ``run(n)`` callable (execute ``n`` times, return elapsed
ms); the shared :mod:`profilers.protocol` does the timing. Adding a runtime is one new file and
one line in :data:`profilers.PROFILERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from profilers.blocks import ModelSpec
from profilers.protocol import Anchor, Measurement, ProtocolConfig, ReferenceProbe, RunFn, calibrate, kept_pass, measure
from profilers.workload import BlockPoint, anchor_point

DeviceKind = Literal["cpu", "cuda"]
#: How profiled models are filled (meta.json ``runtime_info.weights``). Tables without it were
#: measured on models whose same-shaped parameters were equal, which ONNX Runtime shares.
WEIGHTS = "seeded random, distinct per parameter"


class BaseProfiler(ABC):
    """Measures block points of one model on one runtime and device kind."""

    #: The runtime's name: a folder under ``latency_tables/<device>/``.
    runtime: ClassVar[str]
    #: The package whose version must match when a table of this runtime is loaded.
    version_package: ClassVar[str | None] = None
    #: Whether a reference probe timed between samples measures the machine, not this runtime's
    #: leftovers (ONNX Runtime's threads spin after each run and starve a probe timed right after).
    probe_compatible: ClassVar[bool] = True
    #: Whether the probe may run between an anchored point's samples. Where False, anchored points
    #: time it before their warm-up (:func:`profilers.protocol.measure` ``probe_first``): their rows
    #: scale by the anchor, and the probe only reports the host's speed.
    probe_beside_samples: ClassVar[bool] = True

    def __init__(self, protocol: ProtocolConfig | None = None, device: DeviceKind = "cpu"):
        self.protocol = protocol or ProtocolConfig()
        self.device: DeviceKind = device
        self._probe: ReferenceProbe | None = None
        self._anchors: dict[str, Anchor] = {}  # anchor point key -> its loaded runner

    @abstractmethod
    def check_available(self) -> None:
        """Raise :class:`nas.errors.AnyshapeError` when the runtime or the device is missing here."""

    @abstractmethod
    def runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """``run(n)`` for ``point``: executes it ``n`` times and returns the elapsed milliseconds."""

    def probe_usable(self) -> bool:
        """Whether this runtime, as configured, leaves the CPU alone between runs (default: :attr:`probe_compatible`)."""
        return self.probe_compatible

    @property
    def probe(self) -> Callable[[], float] | None:
        """The reference matmul timed beside every sample (CPU with ``protocol.reference``), else None."""
        if self.device != "cpu" or not self.protocol.reference or not self.probe_usable():
            return None
        if self._probe is None:
            self._probe = ReferenceProbe(self.protocol.threads)
        return self._probe

    def anchor_runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """``run(n)`` for an anchor point, kept for the whole run (default: :meth:`runner`)."""
        return self.runner(spec, point)

    def anchor(self, spec: ModelSpec, point: BlockPoint) -> Anchor | None:
        """The anchor ``point`` is timed beside (:meth:`ProtocolConfig.anchored` for its phase), built on first use; else None."""
        if not self.protocol.anchored(point.phase):
            return None
        target = anchor_point(spec.family.space(spec.config), point)
        if target.key not in self._anchors:
            run = self.anchor_runner(spec, target)
            self._anchors[target.key] = Anchor(target.key, run, calibrate(run, self.protocol))
        return self._anchors[target.key]

    def measure(self, spec: ModelSpec, point: BlockPoint) -> Measurement:
        """One point, timed with the shared protocol (one pass; raw latencies plus ``reference_ms`` / anchor ratio)."""
        anchor = self.anchor(spec, point)
        return measure(self.runner(spec, point), self.protocol, self.probe, anchor, probe_first=not self.probe_beside_samples)

    def measure_rounds(self, spec: ModelSpec, point: BlockPoint, compute_share: float = 1.0, *, middle: bool = False) -> Measurement:
        """One point timed ``protocol.rounds`` times on one built block; the pass is kept by :func:`kept_pass`
        (``middle``: the middle pass, as :func:`profilers.protocol.live_protocol` measurements keep)."""
        anchor = self.anchor(spec, point)
        run = self.runner(spec, point)
        first = not self.probe_beside_samples
        return kept_pass([measure(run, self.protocol, self.probe, anchor, probe_first=first) for _ in range(self.protocol.rounds)],
                         compute_share, middle=middle)

    def setup(self) -> None:
        """Apply the protocol's thread count before a run (and remember what to restore)."""
        return None

    def teardown(self) -> None:
        """Undo :meth:`setup` and free cached modules / sessions (subclasses call this too: it drops the anchors)."""
        self._anchors = {}

    def describe(self) -> dict[str, Any]:
        """What goes into meta.json about the runtime (name, device kind, provider, threads)."""
        return {"runtime": self.runtime, "device_kind": self.device, "threads": self.protocol.threads, "weights": WEIGHTS}
