"""ONNX Runtime: each point's torch block is exported (dynamo exporter, fixed shapes) and run in a session.

A decoder's whole-model decode step is the graph ``anyshape extract --onnx`` writes (Optimum's
KV-cache layout, :class:`nas.onnx_export.CachedDecoder`), so a table times the step a user's ONNX
Runtime generation runs; tables whose meta has no ``decode_graph`` timed a stacked-cache graph.

CPU execution provider by default; the CUDA execution provider where onnxruntime-gpu is installed
(inputs and outputs bound on the GPU with IOBinding, so host copies are not timed).
Exported graphs live in a temporary directory. With several passes over the points
(``protocol.rounds``), each graph is exported once and kept for the later passes while the kept
graphs stay under :attr:`OnnxRuntimeProfiler.export_cache_bytes` (and a quarter of the free disk);
past that, a graph lives for its own measurement only. With ``protocol.stagger`` a point's passes
come one point apart and its session stays loaded until its last pass (at most ``rounds``
sessions at once), so a graph too big to keep is exported once all the same.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from nas.errors import AnyshapeError
from profilers._base import BaseProfiler
from profilers.blocks import BlockBuilder, BuiltBlock, ModelSpec
from profilers.protocol import RunFn
from profilers.workload import BlockPoint

#: Graphs larger than this are saved with external data (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1 << 30


class OnnxRuntimeProfiler(BaseProfiler):
    runtime: ClassVar[str] = "onnxruntime"
    version_package: ClassVar[str | None] = "onnxruntime"

    _builder: BlockBuilder | None = None
    _workdir: tempfile.TemporaryDirectory[str] | None = None
    #: Most bytes of exported graphs kept on disk for later passes.
    export_cache_bytes: ClassVar[int] = 8 << 30

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"

    def check_available(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise AnyshapeError("runtime onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
        if self.provider not in ort.get_available_providers():
            raise AnyshapeError(
                f"CUDA was asked for but this onnxruntime {ort.__version__} has no {self.provider} "
                f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a CUDA machine"
            )
        if self.protocol.anchored and self.protocol.spinning and self.device == "cpu":
            raise AnyshapeError(f"protocol {self.protocol.name} anchors its points but lets ONNX Runtime's threads spin: the "
                                "measured session's spinning threads would slow the anchor timed after it; set spinning: false")

    def setup(self) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="anyshape-ort-")
        self._cache: dict[str, tuple[Path, list[Any]]] = {}  # point key -> (graph, inputs)
        self._cached_bytes = 0
        self._exports = 0
        self._sessions: dict[str, tuple[Any, dict[str, Any]]] = {}  # point key -> (session, feed); stagger only

    def teardown(self) -> None:
        super().teardown()
        self._builder = None
        self._sessions = {}
        self._cache = {}
        self._cached_bytes = 0
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _graph(self, spec: ModelSpec, point: BlockPoint) -> tuple[Path, list[Any], bool]:
        """The point's exported graph and its inputs: from the cache, or exported now (and kept if it fits)."""
        import shutil

        if point.key in self._cache:
            path, feed = self._cache[point.key]
            return path, feed, True
        if self._builder is None or self._builder.spec is not spec:
            self._builder = BlockBuilder(spec, device="cpu", decode_graph="exported")
        block = self._builder.build(point)
        assert self._workdir is not None
        folder = Path(self._workdir.name)
        self._exports += 1
        path = export_block(block, folder / f"graph-{self._exports}.onnx")
        feed = [t.numpy() for t in block.inputs]  # in the graph's input order
        size = sum(f.stat().st_size for f in folder.glob(f"{path.name}*"))
        budget = min(self.export_cache_bytes, shutil.disk_usage(folder).free // 4)
        later = self.protocol.rounds > 1 and not self.protocol.stagger  # staggered: the session stays loaded instead
        keep = later and self._cached_bytes + size <= budget
        if keep:
            self._cache[point.key] = (path, feed)
            self._cached_bytes += size
        return path, feed, keep

    def runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        if self._workdir is None:
            self.setup()
        if point.key in self._sessions:
            return self._run(*self._sessions[point.key])
        session, feed = self._session(spec, point)
        if self.protocol.stagger and self.protocol.rounds > 1:  # loaded until its last pass, rounds points later
            self._sessions[point.key] = (session, feed)
            while len(self._sessions) > self.protocol.rounds:  # the oldest point's passes are done
                del self._sessions[next(iter(self._sessions))]
        return self._run(session, feed)

    def anchor_runner(self, spec: ModelSpec, point: BlockPoint) -> RunFn:
        """The anchor's own session, outside the staggered sessions (which are dropped as points finish)."""
        if self._workdir is None:
            self.setup()
        return self._run(*self._session(spec, point))

    def _session(self, spec: ModelSpec, point: BlockPoint) -> tuple[Any, dict[str, Any]]:
        import onnxruntime as ort

        path, arrays, kept = self._graph(spec, point)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.protocol.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.protocol.spinning else "0")
        session = ort.InferenceSession(str(path), options, providers=[self.provider])
        if not kept:  # the session holds the graph now; one uncached graph at a time on disk
            for f in path.parent.glob(f"{path.name}*"):
                f.unlink()
        return session, dict(zip([i.name for i in session.get_inputs()], arrays))

    def _run(self, session: Any, feed: dict[str, Any]) -> RunFn:
        if self.device == "cuda":  # pragma: no cover - needs a GPU
            return _cuda_run(session, feed)

        def run(n: int) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                session.run(None, feed)
            return (time.perf_counter_ns() - start) / 1e6

        return run

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        info = super().describe()
        info.update(onnxruntime=ort.__version__, provider=self.provider, graph_optimization="ORT_ENABLE_ALL",
                    intra_op_spinning=self.protocol.spinning,
                    export="torch.onnx.export(dynamo=True), fixed shapes per point",
                    decode_graph="exported")  # a decoder's decode step is the graph extract --onnx writes
        return info


def _cuda_run(session: Any, feed: dict[str, Any]) -> RunFn:  # pragma: no cover - needs a GPU
    import onnxruntime as ort

    binding = session.io_binding()
    for name, array in feed.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda")

    def run(n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            session.run_with_iobinding(binding)
        return (time.perf_counter_ns() - start) / 1e6

    return run


def export_block(block: BuiltBlock, path: Path) -> Path:
    """Export ``block`` with its example input shapes to ``path`` (external data for big graphs)."""
    import torch

    from nas.onnx_export import quiet_export

    params = sum(p.numel() * p.element_size() for p in block.module.parameters())
    external = params > _EXTERNAL_DATA_BYTES
    try:
        with quiet_export():
            program = torch.onnx.export(
                block.module, block.inputs, input_names=list(block.input_names), dynamo=True, external_data=external,
                output_names=list(block.output_names) if block.output_names else None,
            )
            assert program is not None
            program.save(str(path), external_data=external)
    except Exception as e:  # the exporter raises many types; all mean "this block did not export"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnyshapeError(f"ONNX export of a {type(block.module).__name__} block failed: {first}") from None
    return path
