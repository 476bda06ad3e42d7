"""The profiler interface: one small class per runtime behind :class:`BaseProfiler`.

A profiler turns a block point into a ``run(n)`` callable (execute ``n`` times, return elapsed
ms); the shared :mod:`profilers.protocol` does the timing. Adding a runtime is one new file and
one line in :data:`profilers.PROFILERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from profilers.blocks import ModelSpec
from profilers.protocol import Anchor, Measurement, ProtocolConfig, RunFn, calibrate, measure, median_pass
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
    def __init__(self, protocol: ProtocolConfig | None = None, device: DeviceKind = "cpu"):
        self.protocol = protocol or ProtocolConfig()
        self.protocol.check_here()
        self.device: DeviceKind = device
        self._anchors: dict[str, Anchor] = {}  # anchor point key -> its loaded runner

    @abstractmethod
    def check_available(self) -> None:
        """Raise :class:`nas.errors.AnyshapeError` when the runtime or the device is missing here."""

    @abstractmethod
    def runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """``run(n)`` for ``point``: executes it ``n`` times and returns the elapsed milliseconds."""

    def anchor_runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """``run(n)`` for an anchor point, kept for the whole run (default: :meth:`runner`)."""
        return self.runner(spec, point)

    def anchor(self, spec: ModelSpec, point: BlockPoint) -> Anchor | None:
        """The anchor ``point`` is timed beside (``protocol.reference: anchor``), built on first use; else None."""
        if not self.protocol.anchored:
            return None
        target = anchor_point(spec.family.space(spec.config), point)
        if target.key not in self._anchors:
            run = self.anchor_runner(spec, target)
            self._anchors[target.key] = Anchor(target.key, run, calibrate(run, self.protocol))
        return self._anchors[target.key]

    def measure(self, spec: ModelSpec, point: BlockPoint) -> Measurement:
        """One point, timed with the shared protocol (one pass; raw latencies plus the anchor ratio where anchored)."""
        return measure(self.runner(spec, point), self.protocol, self.anchor(spec, point))

    def measure_rounds(self, spec: ModelSpec, point: BlockPoint) -> Measurement:
        """One point timed ``protocol.rounds`` times on one built block, its middle pass kept (:func:`median_pass`)."""
        anchor = self.anchor(spec, point)
        run = self.runner(spec, point)
        return median_pass([measure(run, self.protocol, anchor) for _ in range(self.protocol.rounds)])

    def setup(self) -> None:
        """Apply the protocol's thread count before a run (and remember what to restore)."""
        return None

    def teardown(self) -> None:
        """Undo :meth:`setup` and free cached modules / sessions (subclasses call this too: it drops the anchors)."""
        self._anchors = {}

    def describe(self) -> dict[str, Any]:
        """What goes into meta.json about the runtime (name, device kind, provider, threads)."""
        return {"runtime": self.runtime, "device_kind": self.device, "threads": self.protocol.threads, "weights": WEIGHTS}
