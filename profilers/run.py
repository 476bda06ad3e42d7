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
    l3_cache_bytes,
    measure_matmul_gflops,
    software_versions,
)
from profilers.protocol import Measurement, ProtocolConfig, at_machine_speed, kept_pass, pass_schedule, percentile
from profilers.tables import COLUMNS, TABLE_FORMAT, format_rows, parse_rows, row_key, table_csv_path, today, write_table
from profilers.workload import BlockPoint, GridConfig, build_points

#: Measurement under this much background CPU use (share of the machine) counts as quiet.
UNDER_LOAD_SHARE = LoadMonitor.UNDER_LOAD_SHARE
#: Above this spread of the reference probe over a run (p90 - p10, over its median) the host itself
#: was noisy: Zen 4 / Zen 5 EPYC VMs read 4-18 % (one Zen 4 run 36 %, its probe-scaled MiniLM table
#: still fine: a warning, not a verdict), an Intel VM whose neighbours slowed it read 37-45 % and
#: its probe-scaled tables scored 35-79 % within 10 % (docs/PROFILING.md).
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
    #: The reference probe spread more than :data:`NOISY_HOST_SPREAD` over the run (None: not probed).
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
    protocol = protocol or (profiler.protocol if profiler else ProtocolConfig())
    profiler = profiler or make_profiler(runtime, kind, protocol)
    profiler.check_available()
    if kind == "cuda":
        _check_gpu_is(device)
    spec = model if isinstance(model, ModelSpec) else resolve_model_spec(model)
    grid = grid or GridConfig(dtype="float16" if kind == "cuda" else "float32")
    space = spec.family.space(spec.config)
    points = build_points(spec.family, space, grid)
    csv_path = table_csv_path(out, device, profiler.runtime, name or spec.name)
    if csv_path.exists() and not overwrite:
        raise AnyshapeError(f"table {csv_path} exists; pass --overwrite to measure it again")
    software = software_versions()
    identity = {
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
    references: dict[str, float] = run.state.setdefault("reference_ms", {})  # key -> probe median of its row
    anchored: dict[str, list[Any]] = run.state.setdefault("anchor", {})  # key -> [anchor key, anchor ms, ratio]
    if profiler.probe is not None:  # a row whose probe was lost in a kill is measured again
        for key in [k for k in run.rows if k not in references]:
            del run.rows[key]
    if protocol.anchor or protocol.anchor_prefill:  # so is an anchored row whose anchor was lost
        for key in [k for k, row in run.rows.items() if protocol.anchored(row["phase"]) and k not in anchored]:
            del run.rows[key]
    resumed = sum(1 for p in points if p.key in run.rows)
    extra = run.state["extra"]
    if kind == "cpu":  # at the start of every segment and at the end of the run; the best is kept
        _record_bandwidth(extra, best_bandwidth(bandwidth_buffer_mib, threads=protocol.threads))
        gflops = measure_matmul_gflops(threads=protocol.threads)
        extra["matmul_gflops"] = round(max(gflops, float(extra.get("matmul_gflops", 0.0))), 1)
    dims = ModelDims.from_config(spec.family, spec.config)
    cache_bytes = l3_cache_bytes()
    todo = [p for p in points if p.key not in run.rows]
    passes: dict[str, list[dict[str, Any]]] = run.state.setdefault("passes", {})  # key -> finished passes
    spread: dict[str, list[float]] = run.state.setdefault("pass_p50_by_point", {})  # key -> every pass's p50 at the run's speed
    segment: dict[str, Any] = {"started": today(), "points": 0, "seconds": 0.0, "background_cpu_share": 0.0}
    run.state["segments"].append(segment)
    run.save_state()  # from the first point on, a killed run can resume
    monitor = LoadMonitor()
    monitor.start()
    start = time.perf_counter()
    total = len(points) * protocol.rounds
    already = resumed * protocol.rounds + sum(len(passes.get(p.key, [])) for p in todo)
    bar = _progress(total, already, f"{device}/{profiler.runtime}/{csv_path.stem}", progress)
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
                share = compute_share(asdict(block_cost(dims, point)), *table_roofs(extra), cache_bytes)
                kept = kept_pass(measured, share, middle=protocol.stagger)
                run.append(make_row(point, dims, protocol.threads, kept))  # raw; scaled to the baseline at the end
                del passes[point.key]
                if protocol.rounds > 1:  # each pass's p50 at the run's speed (as judged above): how much the passes disagreed
                    spread[point.key] = [round(_judged(m, share), 6) for m in measured]
                if kept.reference_ms is not None:
                    references[point.key] = kept.reference_ms
                anchor = profiler.anchor(spec, point)
                if anchor is not None and kept.anchor_ms is not None and kept.anchor_ratio is not None:
                    anchored[point.key] = [anchor.key, kept.anchor_ms, kept.anchor_ratio]
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
    rows = [run.rows[p.key] for p in points]
    if profiler.probe is not None:
        rows, extra["reference"] = _scale_to_baseline(rows, points, references, profiler, extra, skip=set(anchored))
    if anchored:
        rows, extra["anchor"] = _scale_to_anchor(rows, points, anchored)
    if protocol.rounds > 1 and all(p.key in spread for p in points):
        extra["passes"] = _pass_summary(points, spread, protocol.rounds, protocol.stagger)
    segments = run.state["segments"]
    seconds = sum(float(s["seconds"]) for s in segments)
    share = sum(float(s["background_cpu_share"]) * float(s["seconds"]) for s in segments) / max(seconds, 1e-9)
    under_load = share > UNDER_LOAD_SHARE
    load = _load_entry(share, under_load, extra.get("reference"), all_anchored=len(anchored) == len(points))
    entry = {
        "format": TABLE_FORMAT,
        "source": "measured",
        "device": device,
        "runtime": profiler.runtime,
        "model": spec.name,
        "family": spec.family.name,
        "kind": spec.family.kind,
        "config_sha256": identity["config_sha256"],
        "shape_space": space.to_dict(),
        "date": today(),
        "fingerprint": device_fingerprint(gpu=kind == "cuda"),
        "software": software,
        "runtime_info": profiler.describe(),
        "protocol": protocol.to_dict(),
        "grid": grid.to_dict(),
        "composition": _composition(spec.family.kind),
        "build_seconds": round(seconds, 1),
        "segments": segments,
        "noisy_points": sum(1 for r in rows if r["noisy"]),
        "load": load,
        **extra,
    }
    write_table(csv_path, rows, entry)
    run.discard()
    return ProfileResult(csv_path, len(rows), len(todo), resumed, entry["noisy_points"], round(seconds, 1), under_load,
                         noisy_host=load.get("noisy_host"))


def _load_entry(share: float, under_load: bool, reference: Mapping[str, Any] | None, *, all_anchored: bool) -> dict[str, Any]:
    """meta.json ``load``: other processes' CPU share, and how much the host's own speed wandered (the probe's spread)."""
    load: dict[str, Any] = {"background_cpu_share": round(share, 3), "under_load": under_load}
    spread = probe_spread(reference)
    if spread is not None:
        load["probe_spread"] = round(spread, 3)
        load["noisy_host"] = spread > NOISY_HOST_SPREAD
    if under_load:
        load["note"] = "measured while other processes used the CPU; rebuild on a quiet machine with the same command"
    elif load.get("noisy_host"):
        advice = ("every row was timed beside its anchor, which follows the host's speed; where the passes still "
                  "disagree (meta.json passes), more --rounds narrow the median" if all_anchored
                  else "rebuild with --anchor --anchor-prefill (rows timed beside a fixed step hold up on such hosts)")
        load["note"] = (f"noisy host: the reference probe's p10-p90 spanned {spread:.0%} of its median over the run (quiet "
                        f"hosts: under {NOISY_HOST_SPREAD:.0%}) with no other process busy, e.g. neighbours on a shared VM; {advice}")
    else:
        load["note"] = "quiet machine"
    return load


def probe_spread(reference: Mapping[str, Any] | None) -> float | None:
    """(p90 - p10) / median of a run's reference probe, from meta.json ``reference`` (None: not probed)."""
    if not reference or not reference.get("probe_ms_p10_p90") or not reference.get("baseline_ms"):
        return None
    low, high = reference["probe_ms_p10_p90"]
    return (float(high) - float(low)) / float(reference["baseline_ms"])


def _judged(m: Measurement, share: float) -> float:
    """What a pass is judged by (:func:`kept_pass`): its anchor ratio where anchored, else its p50 at the run's speed."""
    return m.anchor_ratio if m.anchor_ratio is not None else at_machine_speed(m, share)


def _scale_to_anchor(rows: list[dict[str, Any]], points: list[BlockPoint],
                     anchored: dict[str, list[Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Anchored rows become ``ratio * baseline``: their median per-sample ratio to their workload's anchor
    times the anchor's median over the run (``baseline``, one per anchor); p10 and p90 move with p50.

    The anchor is the same kind of work as the rows, so the drift divides out in full: no compute
    share, and the probe is not used for these rows.
    """
    import statistics

    by_anchor: dict[str, list[float]] = {}
    for anchor_key, anchor_ms, _ in anchored.values():
        by_anchor.setdefault(anchor_key, []).append(float(anchor_ms))
    baselines = {k: statistics.median(v) for k, v in by_anchor.items()}
    out = []
    for p, row in zip(points, rows):
        if p.key in anchored:
            anchor_key, _, ratio = anchored[p.key]
            row = _times(row, float(ratio) * baselines[anchor_key] / float(row["latency_ms_p50"]))
        out.append(row)
    keys = [p.key for p in points if p.key in anchored]
    info = {
        "baseline_ms": {k: round(v, 5) for k, v in baselines.items()},
        "note": "every anchored row (decode; prefill too with protocol.anchor_prefill) is (the median of its samples' "
                "ratios to its workload's anchor, a fixed whole-model step of the same phase timed after each sample) "
                "* baseline_ms[anchor]; raw = row * anchor_ms / (ratio * baseline_ms)",
        "anchor_by_point": {k: anchored[k][0] for k in keys},
        "anchor_ms_by_point": {k: round(float(anchored[k][1]), 5) for k in keys},
        "ratio_by_point": {k: round(float(anchored[k][2]), 6) for k in keys},
    }
    return out, info


def _scale_to_baseline(rows: list[dict[str, Any]], points: list[BlockPoint], references: dict[str, float],
                       profiler: BaseProfiler, extra: dict[str, Any],
                       skip: set[str] | frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scale every row's compute share by ``baseline / its probe``; baseline = the median probe of the whole run.

    The probe is a matmul in cache: it times how fast the cores run now, not the memory. A row is
    scaled by ``(baseline / probe) ** share``, ``share`` being its compute share (:func:`compute_share`),
    so a memory-bound decode step keeps its raw time when a neighbour slows the cores. Scaling
    every row in full had scattered the decode rows of the torch Qwen2.5-0.5B table (8.1 %
    relative residual of a linear fit in bytes, FLOPs and depth, against 2.9 % raw and 2.6 %
    scaled by share; prefill 2.8 % in full, 2.3 % by share); rows whose bytes fit the last-level
    cache have share 1, as before.

    Rows in ``skip`` (anchored rows) are left as they are and get no share; their probes still count
    towards the baseline (the machine's typical speed over the run).
    """
    import statistics

    probes = [references[p.key] for p in points]
    baseline = statistics.median(probes)
    shares = _compute_shares([r for p, r in zip(points, rows) if p.key not in skip], extra, l3_cache_bytes())
    scaled = [row if p.key in skip else _times(row, (baseline / probe) ** shares[p.key])
              for p, row, probe in zip(points, rows, probes)]
    described = getattr(profiler.probe, "describe", lambda: {"kernel": type(profiler.probe).__name__})()
    info = {
        **described,
        "baseline_ms": round(baseline, 5),
        "probe_ms_p10_p90": [round(percentile(probes, 10), 5), round(percentile(probes, 90), 5)],
        "note": "every row is scaled by (baseline_ms / the probe timed beside its samples) ** its compute share; "
                "raw = row * (probe / baseline_ms) ** share",
        "probe_ms_by_point": {p.key: round(references[p.key], 5) for p in points},
        "compute_share_by_point": shares,
    }
    return scaled, info


def _times(row: dict[str, Any], factor: float) -> dict[str, Any]:
    return {**row, **{k: row[k] * factor for k in ("latency_ms_p10", "latency_ms_p50", "latency_ms_p90")}}


def table_roofs(entry: Mapping[str, Any]) -> tuple[float, float]:
    """A run's measured fp32 GEMM rate (GFLOP/s) and memory bandwidth (GB/s) from its meta.json entry; 0 where unknown."""
    return float(entry.get("matmul_gflops") or 0.0), float((entry.get("memory_bandwidth") or {}).get("bound_gb_s") or 0.0)


def _compute_shares(rows: list[dict[str, Any]], extra: Mapping[str, Any], cache_bytes: int) -> dict[str, float]:
    """Each row's :func:`compute_share` on the run's roofs (:func:`table_roofs`), by point key."""
    gflops, bandwidth = table_roofs(extra)
    return {row_key(row): round(compute_share(row, gflops, bandwidth, cache_bytes), 4) for row in rows}


def rescale_table(csv_path: str | Path) -> int:
    """Scale a measured table's rows by compute share again, from the probes its meta.json kept (nothing is measured).

    For tables written before rows were scaled by compute share (every row scaled in full): the
    raw rows are recovered (``row * probe / baseline``), scaled by :func:`_scale_to_baseline`'s
    rule, and the CSV and meta.json rewritten atomically. Returns how many rows changed by more
    than 0.1 %; a table already scaled by share, or never probed, is left as it is (0).
    """
    from profilers.tables import load_table

    table = load_table(csv_path, check_software=False)
    entry = dict(table.meta)
    reference = dict(entry.get("reference") or {})
    if entry.get("source") != "measured" or not reference.get("probe_ms_by_point") or "compute_share_by_point" in reference:
        return 0
    keys = [row_key(row) for row in table.rows]
    baseline, probes = float(reference["baseline_ms"]), reference["probe_ms_by_point"]
    missing = [k for k in keys if k not in probes]
    if missing:
        raise AnyshapeError(f"{csv_path}: meta.json has no probe for {len(missing)} rows (first: {missing[0]}); measure the table again")
    raw = [_times(dict(row), probes[k] / baseline) for k, row in zip(keys, table.rows)]
    shares = _compute_shares(raw, entry, l3_cache_bytes((entry.get("fingerprint") or {}).get("l3_cache")))
    rows = [_times(row, (baseline / probes[k]) ** shares[k]) for k, row in zip(keys, raw)]
    reference.update(
        note="every row is scaled by (baseline_ms / the probe timed beside its samples) ** its compute share; "
             "raw = row * (probe / baseline_ms) ** share",
        compute_share_by_point=shares,
        rescaled="scaled by compute share from the recorded probes on " + today() + " (first written with every row scaled in full)",
    )  # fmt: skip
    entry["reference"] = reference
    for key in ("rows", "file"):
        entry.pop(key, None)
    write_table(Path(csv_path), rows, entry)
    return sum(1 for new, old in zip(rows, table.rows) if abs(new["latency_ms_p50"] / old["latency_ms_p50"] - 1) > 1e-3)


def rekeep_middle_pass(csv_path: str | Path) -> int:
    """Move a staggered table's probe-scaled rows from their fastest pass to the middle one, from the passes its meta.json kept.

    For tables measured with ``--stagger`` before :func:`profilers.protocol.kept_pass` kept the
    middle pass there. meta.json holds every pass's p50 at the run's speed (``passes.p50_by_point``);
    each row that kept its fastest pass is multiplied by (middle / fastest) of those, p10 and p90
    alike (the probe recorded stays the fastest pass's), and the CSV and meta.json are rewritten
    atomically. Anchored rows already kept the middle ratio. Returns how many rows changed by
    more than 0.1 %; a table not staggered, without its passes, or already so is left as it is (0).
    """
    from profilers.tables import load_table

    table = load_table(csv_path, check_software=False)
    entry = dict(table.meta)
    passes = dict(entry.get("passes") or {})
    by_point = passes.get("p50_by_point") or {}
    staggered = bool((entry.get("protocol") or {}).get("stagger"))
    if entry.get("source") != "measured" or not staggered or not by_point or passes.get("kept") == KEPT_MIDDLE:
        return 0
    keys = [row_key(row) for row in table.rows]
    missing = [k for k in keys if not by_point.get(k)]
    if missing:
        raise AnyshapeError(f"{csv_path}: meta.json has no passes for {len(missing)} rows (first: {missing[0]}); measure the table again")
    anchored = set((entry.get("anchor") or {}).get("ratio_by_point") or {})
    rows = []
    for key, row in zip(keys, table.rows):
        ordered = sorted(float(v) for v in by_point[key])
        middle = ordered[(len(ordered) - 1) // 2]
        rows.append(dict(row) if key in anchored else _times(dict(row), middle / ordered[0]))
    passes.update(kept=KEPT_MIDDLE, rekept=f"moved from the fastest to the middle pass on {today()} from the recorded passes "
                  "(rows times middle / fastest p50 at the run's speed; the probe recorded is the fastest pass's)")
    entry["passes"] = passes
    for key in ("rows", "file"):
        entry.pop(key, None)
    write_table(Path(csv_path), rows, entry)
    return sum(1 for new, old in zip(rows, table.rows) if abs(new["latency_ms_p50"] / old["latency_ms_p50"] - 1) > 1e-3)


def compute_share(row: dict[str, Any], gflops: float, bandwidth_gb_s: float, cache_bytes: int) -> float:
    """The share of a row's time its roofline gives to compute: ``t_flops / (t_flops + t_bytes)``.

    ``t_bytes`` counts the row's weights and activations at the measured memory bandwidth, and is 0
    when they fit the last-level cache (then the row is compute- or overhead-bound, all of it
    slowed by busy cores). 1 when the machine's roofs are unknown.
    """
    moved = float(row["weight_bytes"]) + float(row["activation_bytes"])
    if gflops <= 0 or bandwidth_gb_s <= 0 or moved <= cache_bytes:
        return 1.0
    t_flops = float(row["flops"]) / (gflops * 1e9)
    t_bytes = moved / (bandwidth_gb_s * 1e9)
    return t_flops / (t_flops + t_bytes) if t_flops + t_bytes > 0 else 1.0


#: meta.json ``passes.kept``: which of a point's passes became its row.
KEPT_FASTEST = ("fastest pass (p50 / reference probe ** compute share, where probed); anchored rows: the pass with the "
                "median ratio to the anchor (p50_by_point then holds each pass's ratio)")
KEPT_MIDDLE = ("staggered: the middle pass (p50 / reference probe ** compute share, where probed; lower middle for an even "
               "count); anchored rows: the pass with the median ratio to the anchor (p50_by_point then holds each pass's ratio)")


def _pass_summary(points: list[BlockPoint], spread: dict[str, list[float]], rounds: int, stagger: bool = False) -> dict[str, Any]:
    """How far each point's passes were from its fastest one (as judged by :func:`_judged`; anchored points: their ratios)."""
    import statistics

    excess = [max(spread[p.key]) / min(spread[p.key]) - 1.0 for p in points]
    return {
        "rounds": rounds,
        "kept": KEPT_MIDDLE if stagger else KEPT_FASTEST,
        "slowest_over_fastest_median": round(statistics.median(excess), 4),
        "slowest_over_fastest_p90": round(percentile(excess, 90), 4),
        "p50_by_point": {p.key: spread[p.key] for p in points},
    }


def _record_bandwidth(extra: dict[str, Any], measured: Bandwidth) -> None:
    if "memory_bandwidth" in extra:
        measured = measured.best(Bandwidth.from_dict(extra["memory_bandwidth"]))
    extra["memory_bandwidth"] = measured.to_dict()


def _check_gpu_is(device: str) -> None:
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


def _progress(total: int, done: int, label: str, enabled: bool) -> Any:
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


