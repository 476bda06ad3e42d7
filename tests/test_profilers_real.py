"""Real measurements on this CPU, the committed tables, and the machine facts they rest on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from nas.families import family_for
from profilers.blocks import ModelSpec
from profilers.environment import cpu_slug, l3_cache_bytes, measure_bandwidth
from profilers.protocol import ProtocolConfig
from profilers.workload import BlockPoint

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "latency_tables"

#: A decoder whose decode-step MLP streams 100 MB of fp32 weights: far more than any L3 cache.
WIDE = {
    "model_type": "llama", "hidden_size": 1024, "num_hidden_layers": 1, "num_attention_heads": 8,
    "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 64, "max_position_embeddings": 512,
}


@pytest.mark.parametrize(
    ("model_name", "cores", "slug"),
    [
        ("Intel(R) Xeon(R) Platinum 8480+", 2, "cpu-xeon-8480-2c"),
        ("AMD EPYC", 2, "cpu-amd-epyc-2c"),
        ("AMD EPYC 7763 64-Core Processor", 16, "cpu-amd-epyc-7763-16c"),
        ("Intel(R) Core(TM) i9-13900K CPU @ 3.00GHz", 8, "cpu-core-i9-13900k-8c"),
    ],
)
def test_cpu_slug_from_cpuinfo(model_name: str, cores: int, slug: str) -> None:
    assert cpu_slug({"model name": model_name}, cores) == slug


def test_this_machine_has_a_slug() -> None:
    assert re.fullmatch(r"cpu-[a-z0-9-]+-\d+c", cpu_slug())


def test_unknown_and_foreign_devices_are_refused() -> None:
    from profilers.devices import check_device_name, device_spec

    with pytest.raises(AnyshapeError, match="unknown device 'tpu'"):
        check_device_name("tpu")
    with pytest.raises(AnyshapeError, match="not this machine's CPU"):
        check_device_name("cpu-other-99c")
    with pytest.raises(AnyshapeError, match="unknown device"):
        device_spec(cpu_slug())
    assert check_device_name("a5000") == "cuda" and check_device_name(cpu_slug()) == "cpu"


def test_cuda_where_there_is_none() -> None:
    import torch

    from profilers.onnxruntime_profiler import OnnxRuntimeProfiler
    from profilers.torch_profiler import TorchProfiler

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(AnyshapeError, match="CUDA was asked for"):
        TorchProfiler(device="cuda").check_available()
    with pytest.raises(AnyshapeError, match="CUDA was asked for"):
        OnnxRuntimeProfiler(device="cuda").check_available()


@pytest.mark.slow
def test_decode_never_beats_the_memory_bandwidth_bound() -> None:
    """A decode step must read every weight once: latency >= weight bytes / measured bandwidth."""
    from profilers.cost import ModelDims, block_cost
    from profilers.torch_profiler import TorchProfiler

    spec = ModelSpec("wide", family_for(WIDE), WIDE)
    point = BlockPoint("mlp", "decode", 1, 1, 128, 1, 0, 0, 8192)
    weights = block_cost(ModelDims.from_config(spec.family, spec.config), point).weight_bytes
    assert weights >= 3 * l3_cache_bytes()
    bandwidth = measure_bandwidth(buffer_mib=512)
    profiler = TorchProfiler(ProtocolConfig(warmup=3, repeats=10, min_repeats=5, max_point_seconds=3.0))
    profiler.setup()
    try:
        m = profiler.measure(spec, point)
    finally:
        profiler.teardown()
    bound_ms = weights / (bandwidth.bound_gb_s * 1e6)
    assert m.latency_ms_p10 >= bound_ms, (m, bandwidth)


def measured_tables() -> list[Path]:
    return sorted((TABLES / cpu_slug()).glob("*/*.csv")) if (TABLES / cpu_slug()).is_dir() else []


@pytest.mark.parametrize("path", measured_tables(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_measured_tables_respect_the_bandwidth_bound(path: Path) -> None:
    from profilers.tables import load_table

    table = load_table(path, device=cpu_slug(), check_software=False)
    assert table.source == "measured"
    bound = table.meta["memory_bandwidth"]["bound_gb_s"]
    big = [r for r in table.rows if r["phase"] == "decode" and r["weight_bytes"] >= 3 * l3_cache_bytes()]
    for row in big:
        assert row["latency_ms_p10"] >= row["weight_bytes"] / (bound * 1e6), row


def test_committed_estimates_are_marked() -> None:
    from profilers.tables import list_tables

    tables = list_tables(TABLES)
    if not tables:
        pytest.skip("no committed tables")
    for t in tables:
        expected = "measured" if t["device"].startswith("cpu-") else "roofline-estimate"
        assert t["source"] == expected, t
