"""``anyshape profile``: measure every point of a model's grid on this device and write the table.

The run is resumable: each measured point is appended (and flushed) to ``<name>.csv.partial``;
started again with the same settings, it skips the points already there. Only torch and numpy
are needed on the device (plus onnxruntime for that runtime); pandas is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nas._io import write_json_atomic
from nas.errors import AnyshapeError
from nas.families import family_for
from profilers._base import BaseProfiler, DeviceKind
from profilers.blocks import ModelSpec
from profilers.cost import ModelDims, block_cost
from profilers.devices import check_device_name
from profilers.environment import (
    Bandwidth,
    LoadMonitor,
    best_bandwidth,
    device_fingerprint,
    measure_matmul_gflops,
    software_versions,
)
from profilers.protocol import (
    Measurement,
    MeasurementModel,
    ProtocolConfig,
    load_protocol,
    median_pass,
    pass_schedule,
    percentile,
)
from profilers.tables import (
    COLUMNS,
    TableMeta,
    format_rows,
    parse_rows,
    read_meta,
    row_key,
    table_csv_path,
    today,
    write_table,
)
from profilers.workload import BlockPoint, GridConfig, anchor_point, build_points, workloads

#: Measurement under this much background CPU use (share of the machine) counts as quiet.
UNDER_LOAD_SHARE = LoadMonitor.UNDER_LOAD_SHARE
#: Above this the host's own speed wandered over the run (no other process busy): the median
#: point's passes disagreeing by more (slowest / fastest - 1; raw rows), or an anchor's p10-p90
#: over its median (anchored rows). The committed tables read 2-8 % on quiet runs and 23-41 % on
#: 2-core Zen 4 / Zen 5 VMs (short points' passes disagree most), anchors 12-37 %.
NOISY_HOST_SPREAD = 0.25


# --------------------------------------------------------------------------- models


def builtin_configs() -> dict[str, dict[str, Any]]:
    """Model configs profiled without weights: name -> config.json dict (profilers/model_configs.json)."""
    text = resources.files("profilers").joinpath("model_configs.json").read_text()
    data = json.loads(text)
    return {name: {k: v for k, v in cfg.items() if not k.startswith("_")} for name, cfg in data.items()}


def resolve_model_spec(model: str) -> ModelSpec:
    """A builtin config name (``qwen2.5-0.5b``), a config.json file, or a model (dir, alias such as ``ref-decoder``, hub id)."""
    configs = builtin_configs()
    if model in configs:
        config = configs[model]
        name = model
    elif model.endswith(".json") and Path(model).is_file():
        try:
            config = json.loads(Path(model).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AnyshapeError(f"cannot read model config {model}: {e}") from None
        if not isinstance(config, dict):
            raise AnyshapeError(f"model config {model} is not a JSON object")
        name = Path(model).stem if Path(model).stem != "config" else Path(model).resolve().parent.name
    else:
        from nas.hub import resolve_model

        source = resolve_model(model)
        config = source.config_dict()
        name = source.spec if source.kind == "alias" else source.path.name
    return ModelSpec(name=name, family=family_for(config), config=config)


def config_sha256(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- profilers


def profiler_classes() -> dict[str, type[BaseProfiler]]:
    from profilers.fake import FakeProfiler
    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.torch_profiler import TorchProfiler

    return {"torch": TorchProfiler, "onnxruntime": OnnxRuntimeProfiler, "fake": FakeProfiler}


def make_profiler(runtime: str, device: DeviceKind, protocol: ProtocolConfig) -> BaseProfiler:
    classes = profiler_classes()
    if runtime not in classes or runtime == "fake":
        raise AnyshapeError(f"unknown runtime {runtime!r}; choose torch or onnxruntime")
    return classes[runtime](protocol, device)


# --------------------------------------------------------------------------- rows


def make_row(point: BlockPoint, cost_dims: ModelDims, threads: int, m: Measurement | None, latency_ms: float | None = None) -> dict[str, Any]:
    """A table row from a measurement (or, for estimates, a single latency with repeats 0)."""
    cost = block_cost(cost_dims, point)
    row: dict[str, Any] = point.to_dict()
    row["threads"] = threads
    if m is not None:
        row.update(latency_ms_p10=m.latency_ms_p10, latency_ms_p50=m.latency_ms_p50, latency_ms_p90=m.latency_ms_p90,
                   repeats=m.repeats, cv=m.cv, noisy=m.noisy)
    else:
        assert latency_ms is not None
        row.update(latency_ms_p10=latency_ms, latency_ms_p50=latency_ms, latency_ms_p90=latency_ms, repeats=0, cv=0.0, noisy=False)
    row.update(flops=float(cost.flops), weight_bytes=float(cost.weight_bytes), activation_bytes=float(cost.activation_bytes))
    return {c: row[c] for c in COLUMNS}


# --------------------------------------------------------------------------- resumable run state


class PartialRun:
    """``<name>.csv.partial`` (rows so far) and ``.<name>.run.json`` (settings and time segments)."""

    def __init__(self, csv_path: Path, identity: dict[str, Any], *, restart: bool):
        self.partial = csv_path.with_name(csv_path.name + ".partial")
        self.state_path = csv_path.with_name(f".{csv_path.stem}.run.json")
        self.identity = identity
        if restart:
            self.discard()
        self.state: dict[str, Any] = {"identity": identity, "segments": [], "extra": {}}
        if self.state_path.exists() or self.partial.exists():
            self._load_existing(csv_path)
        self.rows = self._read_rows()

    def _load_existing(self, csv_path: Path) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise AnyshapeError(
                f"an unfinished run of {csv_path.name} left {self.partial.name} without readable settings; "
                "pass --restart to discard it"
            ) from None
        if state.get("identity") != self.identity:
            old = state.get("identity", {})
            changed = sorted(k for k in set(old) | set(self.identity) if old.get(k) != self.identity.get(k))
            raise AnyshapeError(
                f"an unfinished run of {csv_path.name} used other settings ({', '.join(changed)} differ); "
                "run the same command to resume it, or pass --restart to discard it"
            )
        self.state = state

    def _read_rows(self) -> dict[str, dict[str, Any]]:
        if not self.partial.exists():
            return {}
        lines = self.partial.read_text().splitlines()
        rows: dict[str, dict[str, Any]] = {}
        header, body = (lines[0], lines[1:]) if lines else (",".join(COLUMNS), [])
        for i, line in enumerate(body):
            try:
                (row,) = parse_rows(header + "\n" + line + "\n", str(self.partial))
            except (AnyshapeError, ValueError):
                if i == len(body) - 1:  # a line cut short by the kill: measure that point again
                    continue
                raise AnyshapeError(f"{self.partial} line {i + 2} is corrupted; pass --restart to discard the run") from None
            rows[row_key(row)] = row
        self._rewrite(list(rows.values()))  # drop a torn last line before appending
        return rows

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        from nas._io import write_text_atomic

        write_text_atomic(self.partial, format_rows(rows))

    def append(self, row: dict[str, Any]) -> None:
        if not self.partial.exists():
            self._rewrite([])
        with open(self.partial, "a", encoding="utf-8") as f:
            f.write(format_rows([row], header=False))
            f.flush()
            os.fsync(f.fileno())
        self.rows[row_key(row)] = row

    def save_state(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def discard(self) -> None:
        for path in (self.partial, self.state_path):
            if path.exists():
                path.unlink()


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class ProfileResult:
    path: Path
    rows: int
    measured_points: int
    resumed_points: int
    noisy_points: int
    build_seconds: float
    under_load: bool
    source: str = "measured"
    #: The host's speed wandered more than :data:`NOISY_HOST_SPREAD` over the run (None: not known).
    noisy_host: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "path": str(self.path)}


def profile(
    model: str | ModelSpec,
    device: str,
    runtime: str,
    out: str | os.PathLike[str] = "latency_tables",
    *,
    grid: GridConfig | None = None,
    protocol: ProtocolConfig | None = None,
    name: str | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = True,
    profiler: BaseProfiler | None = None,
    bandwidth_buffer_mib: int = 512,
) -> ProfileResult:
    """Measure ``model``'s blocks on ``device`` with ``runtime`` and write ``out/<device>/<runtime>/<name>.csv``.

    ``bandwidth_buffer_mib``: size of the copy benchmark recorded in meta.json (keep it far above
    the last-level cache; tests use less).
    """
    kind = check_device_name(device)
    protocol = protocol or (profiler.protocol if profiler else load_protocol())
    profiler = profiler or make_profiler(runtime, kind, protocol)
    profiler.check_available()
    if kind == "cuda":
        check_gpu_is(device)
    spec = model if isinstance(model, ModelSpec) else resolve_model_spec(model)
    grid = grid or GridConfig(dtype="float16" if kind == "cuda" else "float32")
    space = spec.family.space(spec.config)
    check_lengths(spec, grid)
    points = build_points(spec.family, space, grid)
    csv_path = table_csv_path(out, device, profiler.runtime, name or spec.name)
    if csv_path.exists() and not overwrite:
        raise AnyshapeError(f"table {csv_path} exists; pass --overwrite to measure it again")
    if (csv_path.parent / "meta.json").exists():
        read_meta(csv_path.parent)  # refused now, not after the run, if it cannot take the new entry
    software = software_versions()
    identity: dict[str, Any] = {
        "model": spec.name,
        "config_sha256": config_sha256(spec.config),
        "device": device,
        "runtime": profiler.runtime,
        "grid": grid.to_dict(),
        "protocol": protocol.to_dict(),
        "software": software,
    }
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    run = PartialRun(csv_path, identity, restart=restart)
    anchored: dict[str, list[Any]] = run.state.setdefault("anchor", {})  # key -> [anchor key, anchor ms, ratio]
    if protocol.anchored:  # a row whose anchor was lost in a kill is measured again
        for key in [k for k in run.rows if k not in anchored]:
            del run.rows[key]
    resumed = sum(1 for p in points if p.key in run.rows)
    extra = run.state["extra"]
    if kind == "cpu":  # at the start of every segment and at the end of the run; the best is kept
        _record_bandwidth(extra, best_bandwidth(bandwidth_buffer_mib, threads=protocol.threads))
        gflops = measure_matmul_gflops(threads=protocol.threads)
        extra["matmul_gflops"] = round(max(gflops, float(extra.get("matmul_gflops", 0.0))), 1)
    dims = ModelDims.from_config(spec.family, spec.config)
    todo = [p for p in points if p.key not in run.rows]
    passes: dict[str, list[dict[str, Any]]] = run.state.setdefault("passes", {})  # key -> finished passes
    spread: dict[str, list[float]] = run.state.setdefault("pass_values", {})  # key -> every pass's judged value
    segment: dict[str, Any] = {"started": today(), "points": 0, "seconds": 0.0, "background_cpu_share": 0.0}
    run.state["segments"].append(segment)
    run.save_state()  # from the first point on, a killed run can resume
    monitor = LoadMonitor()
    monitor.start()
    start = time.perf_counter()
    total = len(points) * protocol.rounds
    already = resumed * protocol.rounds + sum(len(passes.get(p.key, [])) for p in todo)
    bar = progress_bar(total, already, f"{device}/{profiler.runtime}/{csv_path.stem}", progress)
    profiler.setup()
    try:
        # whole passes, so that a burst of load hits one pass of a point (or staggered: protocol.stagger)
        for round_, index in pass_schedule(len(todo), protocol.rounds, protocol.stagger):
            point = todo[index]
            done = passes.setdefault(point.key, [])
            if len(done) > round_:
                continue
            done.append(asdict(profiler.measure(spec, point)))
            if len(done) == protocol.rounds:
                measured = [Measurement(**m) for m in done]
                kept = median_pass(measured)
                run.append(make_row(point, dims, protocol.threads, kept))  # raw; anchored rows become ratio * baseline at the end
                del passes[point.key]
                spread[point.key] = [round(m.judged, 6) for m in measured]
                if protocol.anchored:
                    assert kept.anchor_ms is not None and kept.anchor_ratio is not None
                    anchored[point.key] = [anchor_point(space, point).key, kept.anchor_ms, kept.anchor_ratio]
                run.save_state()
            segment["points"] = int(segment["points"]) + 1
            segment["seconds"] = round(time.perf_counter() - start, 2)
            if segment["points"] % 5 == 0:
                segment["background_cpu_share"] = monitor.stop()["background_cpu_share"]
                run.save_state()
            bar.update(1)
    finally:
        profiler.teardown()
        bar.close()
        load = monitor.stop()
        segment.update(seconds=round(time.perf_counter() - start, 2), background_cpu_share=load["background_cpu_share"])
        run.save_state()
    if kind == "cpu":
        _record_bandwidth(extra, best_bandwidth(bandwidth_buffer_mib, threads=protocol.threads))
    measurement = measurement_record(protocol, points, anchored)
    rule = MeasurementModel(protocol, measurement["baseline_ms"])
    rows = [_as_row(run.rows[p.key], rule, measurement, p.key) for p in points]
    segments = run.state["segments"]
    seconds = sum(float(s["seconds"]) for s in segments)
    share = sum(float(s["background_cpu_share"]) * float(s["seconds"]) for s in segments) / max(seconds, 1e-9)
    under_load = share > UNDER_LOAD_SHARE
    pass_summary = _pass_summary(points, spread, protocol.rounds) if protocol.rounds > 1 and all(p.key in spread for p in points) else {}
    meta = TableMeta(
        source="measured", device=device, runtime=profiler.runtime, model=spec.name, family=spec.family.name,
        kind=spec.family.kind, config_sha256=identity["config_sha256"], shape_space=space.to_dict(), date=today(),
        software=software, grid=grid.to_dict(), composition=_composition(spec.family.kind), protocol=protocol,
        measurement=measurement, fingerprint=device_fingerprint(gpu=kind == "cuda"), runtime_info=profiler.describe(),
        matmul_gflops=extra.get("matmul_gflops"), memory_bandwidth=extra.get("memory_bandwidth"),
        build_seconds=round(seconds, 1), segments=segments, noisy_points=sum(1 for r in rows if r["noisy"]),
        load=load_entry(share, under_load, protocol, measurement, pass_summary), passes=pass_summary,
    )  # fmt: skip
    write_table(csv_path, rows, meta)
    run.discard()
    return ProfileResult(csv_path, len(rows), len(todo), resumed, meta.noisy_points, round(seconds, 1), under_load,
                         noisy_host=meta.load.get("noisy_host"))


def check_lengths(spec: ModelSpec, grid: GridConfig) -> None:
    """Refuse an encoder's prompt lengths past its learned positions (``max_position_embeddings``), in one line.

    Encoders (BERT) look positions up in a table and cannot run longer inputs; decoders' rotary
    positions can (a latency is real there, whatever the model was trained on).
    """
    limit = int(spec.config.get("max_position_embeddings") or 0)
    if spec.family.kind != "encoder" or not limit:
        return
    longest = max(s for phase, _, s, _ in workloads(spec.family, grid) if phase == "prefill")
    if longest > limit:
        raise AnyshapeError(f"grid lengths reach {longest} tokens but {spec.name} has {limit} positions "
                            f"(max_position_embeddings); keep seq_len within {limit}")


def measurement_record(protocol: ProtocolConfig, points: list[BlockPoint], anchored: Mapping[str, list[Any]]) -> dict[str, Any]:
    """meta.json ``measurement``: the speed reference and, anchored, each anchor's median over the run and every point's ratio."""
    import statistics

    if not protocol.anchored:
        return {"reference": "none", "baseline_ms": {}, "note": "every row is the raw time of the point's middle pass"}
    by_anchor: dict[str, list[float]] = {}
    for p in points:
        anchor_key, anchor_ms, _ = anchored[p.key]
        by_anchor.setdefault(anchor_key, []).append(float(anchor_ms))
    return {
        "reference": "anchor",
        "baseline_ms": {k: round(statistics.median(v), 6) for k, v in sorted(by_anchor.items())},
        "note": "every row is (the median of its samples' ratios to its workload's anchor, a fixed whole-model step timed "
                "after each sample) * baseline_ms[anchor]; raw = row * anchor_ms / baseline_ms = ratio * anchor_ms",
        "anchor_by_point": {p.key: anchored[p.key][0] for p in points},
        "anchor_ms_by_point": {p.key: round(float(anchored[p.key][1]), 6) for p in points},
        "ratio_by_point": {p.key: round(float(anchored[p.key][2]), 6) for p in points},
    }


def _as_row(raw: dict[str, Any], model: MeasurementModel, measurement: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A partial run's raw row as the table holds it (:meth:`MeasurementModel.row`)."""
    if not model.protocol.anchored:
        return raw
    m = Measurement(raw["latency_ms_p10"], raw["latency_ms_p50"], raw["latency_ms_p90"], raw["repeats"], raw["cv"], raw["noisy"],
                    1, 1, anchor_ms=measurement["anchor_ms_by_point"][key], anchor_ratio=measurement["ratio_by_point"][key])
    kept = model.row(m, measurement["anchor_by_point"][key])
    return {**raw, "latency_ms_p10": kept.latency_ms_p10, "latency_ms_p50": kept.latency_ms_p50, "latency_ms_p90": kept.latency_ms_p90}


def load_entry(share: float, under_load: bool, protocol: ProtocolConfig, measurement: Mapping[str, Any],
               passes: Mapping[str, Any]) -> dict[str, Any]:
    """meta.json ``load``: other processes' CPU share, and how much the host's own speed wandered over the run.

    With raw rows that is how far the median point's passes disagreed; anchored, the widest p10-p90
    of an anchor over the run (the rows divide it out, so it is a note, not a warning).
    """
    load: dict[str, Any] = {"background_cpu_share": round(share, 3), "under_load": under_load}
    spread = speed_spread(protocol, measurement, passes)
    if spread is not None:
        load["speed_spread"] = round(spread, 3)
        load["noisy_host"] = spread > NOISY_HOST_SPREAD
    if under_load:
        load["note"] = "measured while other processes used the CPU; rebuild on a quiet machine with the same command"
    elif load.get("noisy_host") and protocol.anchored:
        load["note"] = (f"noisy host: an anchor's p10-p90 spanned {spread:.0%} of its median over the run (quiet hosts: "
                        f"under {NOISY_HOST_SPREAD:.0%}); every row was timed beside its anchor, which follows the host's "
                        "speed, and anyshape calibrate sets the level on the machine you deploy on")
    elif load.get("noisy_host"):
        load["note"] = (f"noisy host: the median point's passes disagreed by {spread:.0%} (quiet hosts: under "
                        f"{NOISY_HOST_SPREAD:.0%}) with no other process busy, e.g. neighbours on a shared VM; "
                        "measure again with --protocol shared-vm (rows timed beside a fixed step hold up there)")
    else:
        load["note"] = "quiet machine"
    return load


def speed_spread(protocol: ProtocolConfig, measurement: Mapping[str, Any], passes: Mapping[str, Any]) -> float | None:
    """How much the host's speed wandered over a run (see :func:`load_entry`); None where not known."""
    if protocol.anchored:
        by_anchor: dict[str, list[float]] = {}
        for key, anchor in (measurement.get("anchor_by_point") or {}).items():
            by_anchor.setdefault(anchor, []).append(float(measurement["anchor_ms_by_point"][key]))
        spreads = [(percentile(v, 90) - percentile(v, 10)) / percentile(v, 50) for v in by_anchor.values() if len(v) > 1]
        return max(spreads) if spreads else None
    value = passes.get("slowest_over_fastest_median")
    return None if value is None else float(value)


def _pass_summary(points: list[BlockPoint], spread: dict[str, list[float]], rounds: int) -> dict[str, Any]:
    """How far each point's passes disagreed (raw p50; anchored points: their ratios to the anchor)."""
    import statistics

    excess = [max(spread[p.key]) / min(spread[p.key]) - 1.0 for p in points]
    return {
        "rounds": rounds,
        "kept": "the middle pass (raw p50; anchored points: ratio to the anchor), the lower middle of an even count",
        "slowest_over_fastest_median": round(statistics.median(excess), 4),
        "slowest_over_fastest_p90": round(percentile(excess, 90), 4),
        "values_by_point": {p.key: spread[p.key] for p in points},
    }


def _record_bandwidth(extra: dict[str, Any], measured: Bandwidth) -> None:
    if "memory_bandwidth" in extra:
        measured = measured.best(Bandwidth.from_dict(extra["memory_bandwidth"]))
    extra["memory_bandwidth"] = measured.to_dict()


def check_gpu_is(device: str) -> None:
    """Measuring --device a5000 on some other GPU would file its numbers under the wrong name."""
    import torch

    from profilers.devices import CUDA_NAME_HINTS

    name = torch.cuda.get_device_name(0)
    if not any(hint.lower() in name.lower() for hint in CUDA_NAME_HINTS.get(device, ())):
        raise AnyshapeError(f"--device {device} but this GPU is {name!r}; use the slug of the GPU you are on")


def _composition(kind: str) -> str:
    if kind == "decoder":
        return "whole-model = embed + depth * (2 * norm + attention + mlp) + norm + head"
    return "whole-model = embed + depth * (attention + mlp) + head (norm rows are inside attention and mlp)"


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, done: int, label: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on a device; the run works without a bar
        return _NoBar()
    return tqdm(total=total, initial=done, desc=label, unit="pt", dynamic_ncols=True)


def grid_from_text(text: str) -> GridConfig:
    """``--grid``: inline JSON or a JSON / YAML file with :class:`GridConfig` fields."""
    from nas._io import load_mapping_arg

    data = load_mapping_arg(text, "--grid", '{"ffn_steps": 4}')
    return GridConfig.from_dict(data)


