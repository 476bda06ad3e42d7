"""Roofline estimates for devices we cannot measure here, and the roofline-vs-measured check.

Per block: ``latency = max(bytes / (bandwidth * eff_memory), flops / (peak * eff_compute))
+ kernels * launch_ms``. The efficiencies and per-kernel overhead are calibrated on a measured
table of the same device class (a CUDA table for GPU estimates) when one exists; otherwise
documented priors are used and meta.json says so. Estimated tables are written with
``source: roofline-estimate``; nothing here ever writes ``measured``.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError
from profilers.blocks import ModelSpec
from profilers.cost import ModelDims, block_cost
from profilers.devices import DeviceSpec, device_spec
from profilers.environment import software_versions
from profilers.run import ProfileResult, _composition, config_sha256, make_row, resolve_model_spec
from profilers.tables import LatencyTable, TableMeta, load_table, table_csv_path, today, write_table
from profilers.workload import BlockPoint, GridConfig, build_points

#: Kernels an eager forward launches per block (decoder, encoder): the fixed cost of small blocks.
KERNELS = {
    "decoder": {"attention": 12, "mlp": 4, "embed": 1, "norm": 6, "head": 2},
    "encoder": {"attention": 10, "mlp": 5, "embed": 5, "norm": 1, "head": 2},
}


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the roofs a runtime reaches, and its per-kernel launch cost."""

    memory: float
    compute: float
    launch_ms: float
    source: str

    def __post_init__(self) -> None:
        if not 0 < self.memory <= 1.5 or not 0 < self.compute <= 1.5:
            raise AnyshapeError(f"efficiency must be in (0, 1.5]; got memory {self.memory}, compute {self.compute}")
        if self.launch_ms < 0:
            raise AnyshapeError(f"efficiency.launch_ms is {self.launch_ms}; it must be >= 0")


#: Priors for eager PyTorch fp16 on a GPU until a measured GPU table calibrates them (guesses, not
#: measurements): GEMV-bound decode streams weights at 70-80 % of peak DRAM bandwidth; mid-size
#: fp16 GEMMs reach about half of dense tensor peak; eager PyTorch + transformers spend ~15 µs of
#: host time per kernel (Python module call + ATen dispatch + launch) on an x86 host, and about
#: 2.5x that on a Jetson's Cortex-A78AE cores. For small models at batch 1 this overhead, not the
#: roofline, dominates decode; calibrate it with a real run as soon as one exists.
GPU_PRIOR = Efficiency(memory=0.75, compute=0.5, launch_ms=0.015, source="prior (no measured CUDA table yet)")
JETSON_PRIOR = Efficiency(memory=0.7, compute=0.45, launch_ms=0.04, source="prior (no measured Jetson table yet)")


def kernels(kind: str, point: BlockPoint) -> int:
    k = KERNELS[kind]
    if point.block != "whole-model":
        return k[point.block]
    per_layer = k["attention"] + k["mlp"] + (2 * k["norm"] if kind == "decoder" else 0)
    outside = k["embed"] + k["head"] + (k["norm"] if kind == "decoder" else 0)
    return point.depth * per_layer + outside


def roofline_ms(dims: ModelDims, point: BlockPoint, bandwidth_gb_s: float, gflops: float, eff: Efficiency) -> float:
    """The estimated latency of ``point``."""
    cost = block_cost(dims, point)
    memory_ms = cost.bytes / (bandwidth_gb_s * eff.memory * 1e6)
    compute_ms = cost.flops / (gflops * eff.compute * 1e6)
    return max(memory_ms, compute_ms) + kernels(dims.kind, point) * eff.launch_ms


def calibrate(table: LatencyTable, dims: ModelDims, bandwidth_gb_s: float, gflops: float) -> Efficiency:
    """Fit efficiencies to a measured table: medians of bound / (measured - launch) per regime."""
    if table.source != "measured":
        raise AnyshapeError(f"cannot calibrate on {table.label}: only measured tables calibrate estimates")
    from profilers.tables import KEY_COLUMNS

    def point_of(row: dict[str, Any]) -> BlockPoint:
        return BlockPoint(**{k: row[k] for k in KEY_COLUMNS})

    # launch cost: the fastest per-kernel time among the cheapest blocks
    small = sorted(table.rows, key=lambda r: r["latency_ms_p50"])[: max(3, len(table.rows) // 10)]
    launch = min(r["latency_ms_p50"] / kernels(dims.kind, point_of(r)) for r in small) * 0.5
    memory: list[float] = []
    compute: list[float] = []
    for row in table.rows:
        point = point_of(row)
        cost = block_cost(dims, point)
        busy = row["latency_ms_p50"] - kernels(dims.kind, point) * launch
        if busy <= 0:
            continue
        mem_ms = cost.bytes / (bandwidth_gb_s * 1e6)
        cmp_ms = cost.flops / (gflops * 1e6)
        (memory if mem_ms >= cmp_ms else compute).append(max(mem_ms, cmp_ms) / busy)
    eff_m = min(1.0, statistics.median(memory)) if memory else 0.5
    eff_c = min(1.0, statistics.median(compute)) if compute else 0.5
    return Efficiency(memory=max(eff_m, 1e-3), compute=max(eff_c, 1e-3), launch_ms=launch, source=f"calibrated on {table.label}")


def ratios(table: LatencyTable, dims: ModelDims, bandwidth_gb_s: float, gflops: float) -> dict[str, float]:
    """Median of pure roofline (100 % of both roofs, no overhead) / measured p50, per block and phase."""
    from profilers.tables import KEY_COLUMNS

    groups: dict[str, list[float]] = {}
    ideal = Efficiency(1.0, 1.0, 0.0, "ideal")
    for row in table.rows:
        point = BlockPoint(**{k: row[k] for k in KEY_COLUMNS})
        value = roofline_ms(dims, point, bandwidth_gb_s, gflops, ideal) / row["latency_ms_p50"]
        groups.setdefault(f"{row['block']}/{row['phase']}", []).append(value)
        groups.setdefault("all", []).append(value)
    return {k: statistics.median(v) for k, v in sorted(groups.items())}


def _calibration_for(spec: DeviceSpec, model: ModelSpec, root: Path, dims: ModelDims) -> Efficiency:
    """A measured CUDA table of the same model under ``root`` calibrates the GPU efficiencies."""
    prior = JETSON_PRIOR if spec.slug.startswith("jetson") else GPU_PRIOR
    for csv_path in sorted(root.glob(f"*/torch/{model.name}.csv")):
        device = csv_path.parent.parent.name
        try:
            measured_spec = device_spec(device)
        except AnyshapeError:
            continue  # a CPU table does not calibrate a GPU
        try:
            table = load_table(csv_path)
        except AnyshapeError:
            continue
        if table.source == "measured":
            return calibrate(table, dims, measured_spec.memory_bandwidth_gb_s, measured_spec.fp16_dense_tflops * 1e3)
    return prior


def estimate(
    model: str | ModelSpec,
    device: str,
    runtime: str = "torch",
    out: str | os.PathLike[str] = "latency_tables",
    *,
    grid: GridConfig | None = None,
    name: str | None = None,
    overwrite: bool = False,
    efficiency: Efficiency | None = None,
) -> ProfileResult:
    """Write a ``roofline-estimate`` table for a GPU we know the specs of (fp16 by default)."""
    spec = device_spec(device)
    model_spec = model if isinstance(model, ModelSpec) else resolve_model_spec(model)
    grid = grid or GridConfig(dtype="float16")
    dims = ModelDims.from_config(model_spec.family, model_spec.config)
    space = model_spec.family.space(model_spec.config)
    csv_path = table_csv_path(out, device, runtime, name or model_spec.name)
    if csv_path.exists() and not overwrite:
        raise AnyshapeError(f"table {csv_path} exists; pass --overwrite to estimate it again")
    eff = efficiency or _calibration_for(spec, model_spec, Path(out), dims)
    gflops = spec.fp16_dense_tflops * 1e3
    points = build_points(model_spec.family, space, grid)
    rows = [make_row(p, dims, 0, None, roofline_ms(dims, p, spec.memory_bandwidth_gb_s, gflops, eff)) for p in points]
    meta = TableMeta(
        source="roofline-estimate", device=device, runtime=runtime, model=model_spec.name, family=model_spec.family.name,
        kind=model_spec.family.kind, config_sha256=config_sha256(model_spec.config), shape_space=space.to_dict(),
        date=today(), software=software_versions(), grid=grid.to_dict(), composition=_composition(model_spec.family.kind),
        device_spec=asdict(spec),
        roofline={
            "formula": "max(bytes / (bandwidth * eff.memory), flops / (fp16_dense_peak * eff.compute)) + kernels * eff.launch_ms",
            "efficiency": asdict(eff),
        },
        note=f"ESTIMATE, not a measurement: replace it with `anyshape profile --device {device} --runtime {runtime} "
             f"--model {model_spec.name} --overwrite` on a real {spec.name}",
    )  # fmt: skip
    write_table(csv_path, rows, meta)
    return ProfileResult(csv_path, len(rows), 0, 0, 0, 0.0, False, source="roofline-estimate")
