"""Real measurements on this CPU, the committed tables, and the machine facts they rest on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from nas.families import family_for
from profilers.blocks import ModelSpec
from profilers.environment import cpu_slug, l3_cache_bytes
from profilers.protocol import ProtocolConfig
from profilers.workload import BlockPoint

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "latency_tables"

#: A decoder whose decode-step MLP streams 400 MB of fp32 weights, widened where the L3 is larger
#: (:func:`wide_ffn`; a VM can see its host's whole L3: 300 MiB on the Intel one).
WIDE = {
    "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 1, "num_attention_heads": 16,
    "num_key_value_heads": 16, "intermediate_size": 16384, "vocab_size": 64, "max_position_embeddings": 512,
}
#: Rows must stream at least this many times the L3 cache to be held to the DRAM bound (a policy
#: that keeps part of a cyclic working set in L3 lets a 2-3x-L3 block beat DRAM bandwidth).
CACHE_MULTIPLE = 8


def machine_bandwidth_gb_s(fresh: float = 0.0) -> float:
    """The best memory bandwidth this machine has shown: the copy / read / GEMV benchmark recorded
    in the meta.json of every committed table of this device, and ``fresh`` (measured now).

    On a shared machine a single benchmark run underestimates the peak (other processes take
    cores and memory bandwidth), so the bound is the best the benchmark ever measured here.
    """
    import json

    best = fresh
    for meta_path in (TABLES / cpu_slug()).glob("*/meta.json"):
        for entry in json.loads(meta_path.read_text())["tables"].values():
            best = max(best, float(entry.get("memory_bandwidth", {}).get("bound_gb_s", 0.0)))
    return best


@pytest.mark.parametrize(
    ("model_name", "cores", "slug"),
    [
        ("Intel(R) Xeon(R) Platinum 8480+", 2, "cpu-xeon-8480-2c"),
        ("AMD EPYC", 2, "cpu-amd-epyc-2c"),  # no family / model known
        ("AMD EPYC 7763 64-Core Processor", 16, "cpu-amd-epyc-7763-16c"),
        ("Intel(R) Core(TM) i9-13900K CPU @ 3.00GHz", 8, "cpu-core-i9-13900k-8c"),
    ],
)
def test_cpu_slug_from_cpuinfo(model_name: str, cores: int, slug: str) -> None:
    assert cpu_slug({"model name": model_name}, cores) == slug


@pytest.mark.parametrize(
    ("family", "model", "slug"),
    [("25", "1", "cpu-amd-epyc-zen3-2c"), ("25", "17", "cpu-amd-epyc-zen4-2c"), ("26", "2", "cpu-amd-epyc-zen5-2c"),
     ("23", "49", "cpu-amd-epyc-zen2-2c"), ("27", "0", "cpu-amd-epyc-f27m0-2c")],
)
def test_a_cpu_named_without_a_model_number_is_told_apart_by_its_family(family: str, model: str, slug: str) -> None:
    """Cloud VMs show "AMD EPYC" for Zen 3, 4 and 5 alike; their tables must not share a slug."""
    info = {"model name": "AMD EPYC", "vendor_id": "AuthenticAMD", "cpu family": family, "model": model}
    assert cpu_slug(info, 2) == slug
    numbered = {**info, "model name": "AMD EPYC 9654 96-Core Processor"}  # a model number says it already
    assert cpu_slug(numbered, 2) == "cpu-amd-epyc-9654-2c"


@pytest.mark.parametrize(
    ("model", "slug"),
    [("207", "cpu-xeon-emerald-rapids-2c"), ("143", "cpu-xeon-sapphire-rapids-2c"), ("85", "cpu-xeon-f6m85-2c")],
)
def test_an_intel_cloud_xeon_is_told_apart_by_its_model(model: str, slug: str) -> None:
    """Intel VMs show "Intel(R) Xeon(R) Processor" whatever the generation."""
    info = {"model name": "Intel(R) Xeon(R) Processor", "vendor_id": "GenuineIntel", "cpu family": "6", "model": model}
    assert cpu_slug(info, 2) == slug


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
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_decode_never_beats_the_memory_bandwidth_bound(runtime: str) -> None:
    """A decode step must read every weight once: latency >= weight bytes / this machine's bandwidth."""
    from profilers.cost import ModelDims, block_cost
    from profilers.environment import best_bandwidth
    from profilers.run import make_profiler

    ffn = wide_ffn(l3_cache_bytes())
    if ffn is None:
        pytest.skip(f"this L3 ({l3_cache_bytes() >> 20} MiB) needs a decode block over {MAX_WIDE_BYTES >> 30} GiB to be held to DRAM")
    config = {**WIDE, "intermediate_size": ffn}
    spec = ModelSpec("wide", family_for(config), config)
    point = BlockPoint("mlp", "decode", 1, 1, 128, 1, 0, 0, ffn)
    weights = block_cost(ModelDims.from_config(spec.family, spec.config), point).weight_bytes
    assert weights >= CACHE_MULTIPLE * l3_cache_bytes()
    protocol = ProtocolConfig(warmup=2, repeats=10, min_repeats=5, max_point_seconds=2.0, spinning=False)
    profiler = make_profiler(runtime, "cpu", protocol)
    profiler.setup()
    try:
        m = profiler.measure(spec, point)
    finally:
        profiler.teardown()
    bandwidth = machine_bandwidth_gb_s(best_bandwidth(buffer_mib=512, passes=5).bound_gb_s)
    assert m.latency_ms_p10 >= weights / (bandwidth * 1e6), (m, bandwidth)


#: The largest decode block the bound test builds (fp32 weights; ONNX Runtime holds a copy too).
MAX_WIDE_BYTES = 4 << 30


def wide_ffn(cache_bytes: int) -> int | None:
    """The FFN width (a multiple of 256, at least WIDE's) whose fp32 MLP streams ``CACHE_MULTIPLE`` times the cache; None above the cap."""
    per_channel = 3 * WIDE["hidden_size"] * 4  # gate, up and down: one column / row each, fp32
    ffn = max(WIDE["intermediate_size"], -(-CACHE_MULTIPLE * cache_bytes // (per_channel * 256)) * 256)
    return ffn if ffn * per_channel <= MAX_WIDE_BYTES else None


def test_the_wide_block_outgrows_the_cache() -> None:
    assert wide_ffn(32 << 20) == 16384  # a 32 MiB L3: WIDE as it is (400 MB)
    ffn = wide_ffn(300 << 20)  # the Intel VM's 300 MiB: widened to 2.4 GB
    assert ffn is not None and ffn % 256 == 0 and ffn * 3 * 2048 * 4 >= 8 * (300 << 20) > (ffn - 256) * 3 * 2048 * 4
    assert wide_ffn(1 << 30) is None  # 8 GiB of weights: over the cap


def measured_tables() -> list[Path]:
    return sorted((TABLES / cpu_slug()).glob("*/*.csv")) if (TABLES / cpu_slug()).is_dir() else []


@pytest.mark.parametrize("path", measured_tables(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_measured_tables_respect_the_bandwidth_bound(path: Path) -> None:
    from profilers.tables import load_table

    table = load_table(path, device=cpu_slug(), check_software=False)
    assert table.source == "measured"
    bound = machine_bandwidth_gb_s()
    assert bound >= table.meta.bandwidth_gb_s > 0
    big = [r for r in table.rows if r["phase"] == "decode" and r["weight_bytes"] >= CACHE_MULTIPLE * l3_cache_bytes()]
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


def test_bandwidth_round_trips_and_best_is_fieldwise() -> None:
    from profilers.environment import Bandwidth

    a = Bandwidth(copy_gb_s=10.0, read_gb_s=12.0, gemv_gb_s=9.0, buffer_mib=512, threads=1, passes=5)
    b = Bandwidth(copy_gb_s=11.0, read_gb_s=8.0, gemv_gb_s=9.5, buffer_mib=512, threads=2, passes=5)
    best = a.best(b)
    assert (best.copy_gb_s, best.read_gb_s, best.gemv_gb_s, best.bound_gb_s) == (11.0, 12.0, 9.5, 12.0)
    assert Bandwidth.from_dict(best.to_dict()) == best


def test_device_specs_are_cited_and_validated() -> None:
    from profilers.devices import DEVICES, DeviceSpec

    assert {"a5000", "h100", "jetson-agx-orin-64gb", "jetson-orin-nano-8gb"} <= set(DEVICES)
    assert DEVICES["a5000"].memory_bandwidth_gb_s == 768 and DEVICES["jetson-agx-orin-64gb"].memory_bandwidth_gb_s == 204.8
    assert DEVICES["jetson-orin-nano-8gb"].memory_bandwidth_gb_s == 68 and DEVICES["jetson-orin-nano-8gb-super"].memory_bandwidth_gb_s == 102
    assert all(d.sources and all(s.startswith("https://") for s in d.sources) for d in DEVICES.values())
    with pytest.raises(AnyshapeError, match="memory_bandwidth_gb_s"):
        DeviceSpec("x", "x", "cuda", 0.0, 1.0, 1.0, ("https://example.com",))


def test_built_blocks_hold_distinct_seeded_weights() -> None:
    """No two parameters of a profiled model are equal: ONNX Runtime shares initializers of equal
    content, so layers filled alike made a whole model stream a fraction of its weights."""
    import torch

    from profilers.blocks import BlockBuilder

    config = {**WIDE, "hidden_size": 64, "intermediate_size": 64, "num_attention_heads": 4,
              "num_key_value_heads": 4, "num_hidden_layers": 3}
    spec = ModelSpec("tiny", family_for(config), config)
    point = BlockPoint("whole-model", "decode", 1, 1, 16, 3, 4, 4, 64)
    params = list(BlockBuilder(spec).build(point).module.parameters())
    same_shape = [(a, b) for i, a in enumerate(params) for b in params[i + 1 :] if a.shape == b.shape]
    assert len(same_shape) > 10  # gate/up, q/o, the layers' norms: the pairs ORT would have shared
    assert not any(torch.equal(a, b) for a, b in same_shape)
    again = list(BlockBuilder(spec).build(point).module.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, again))  # seeded: the same model every run
