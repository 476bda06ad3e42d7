"""Device latency profilers, the measurement protocol, device specs and roofline estimates.

Importing this package does no I/O and imports neither torch nor onnxruntime until a profiler
is used: torch and numpy are all a device needs to run ``anyshape profile``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BaseProfiler",
    "BlockPoint",
    "FakeProfiler",
    "GridConfig",
    "LatencyTable",
    "Measurement",
    "OnnxRuntimeProfiler",
    "ProtocolConfig",
    "TorchProfiler",
    "estimate",
    "list_tables",
    "load_table",
    "measure",
    "profile",
]

if TYPE_CHECKING:
    from profilers._base import BaseProfiler
    from profilers.fake import FakeProfiler
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.protocol import Measurement, ProtocolConfig, measure
    from profilers.roofline import estimate
    from profilers.run import profile
    from profilers.tables import LatencyTable, list_tables, load_table
    from profilers.torch_profiler import TorchProfiler
    from profilers.workload import BlockPoint, GridConfig

_WHERE = {
    "BaseProfiler": "profilers._base",
    "FakeProfiler": "profilers.fake",
    "OnnxRuntimeProfiler": "profilers.onnxruntime_profiler",
    "TorchProfiler": "profilers.torch_profiler",
    "Measurement": "profilers.protocol",
    "ProtocolConfig": "profilers.protocol",
    "measure": "profilers.protocol",
    "estimate": "profilers.roofline",
    "profile": "profilers.run",
    "LatencyTable": "profilers.tables",
    "list_tables": "profilers.tables",
    "load_table": "profilers.tables",
    "BlockPoint": "profilers.workload",
    "GridConfig": "profilers.workload",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'profilers' has no attribute {name!r}")
