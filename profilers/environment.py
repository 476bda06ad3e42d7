"""What machine and software a table was measured on: fingerprint, versions, bandwidth, load.

Everything here reads the machine when called (never at import).
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions are recorded in meta.json.
SOFTWARE_PACKAGES = ("anyshape", "torch", "transformers", "onnxruntime", "onnx", "numpy")


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def logical_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_slug(cpuinfo: dict[str, str] | None = None, cores: int | None = None) -> str:
    """This CPU's device slug, ``cpu-<vendor-model>-<N>c`` (e.g. ``cpu-xeon-8480-2c``, ``cpu-amd-epyc-zen4-2c``).

    Where the model name carries no model number (cloud VMs show "AMD EPYC"), the
    microarchitecture from ``cpu family`` / ``model`` is added (:func:`cpu_generation`): the
    slug ``cpu-amd-epyc-2c`` had been a Zen 3, a Zen 4 and a Zen 5 machine, and ONNX Runtime
    prefill ran twice as fast on the Zen 5 (docs/PROFILING.md).
    """
    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    cores = logical_cores() if cores is None else cores
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    words = _model_words(name)
    if not re.search(r"\d", words):
        generation = cpu_generation(info.get("vendor_id", ""), info.get("cpu family", ""), info.get("model", ""))
        if generation:
            words = f"{words}-{generation}"
    return f"cpu-{words}-{cores}c"


#: Intel family-6 server models (CPUID model number) -> generation. Skylake-SP and Cascade Lake
#: share model 0x55 (only the stepping differs), so that one stays ``f6m85``.
INTEL_SERVER_MODELS = {
    0x6A: "ice-lake",
    0x8F: "sapphire-rapids",
    0xCF: "emerald-rapids",
    0xAD: "granite-rapids",
    0xAF: "sierra-forest",
}


def cpu_generation(vendor: str, family: str, model: str) -> str | None:
    """A short microarchitecture tag from CPUID family / model: ``zen4``, ``emerald-rapids``, ..., else ``f<family>m<model>``.

    AMD's family 25 holds Zen 3 and Zen 4 by model range (Milan 0x01, Genoa 0x11, Bergamo 0xa0);
    family 26 is Zen 5. Intel's server cores are family 6 with one model per generation
    (:data:`INTEL_SERVER_MODELS`); cloud VMs show them as "Intel(R) Xeon(R) Processor". None
    where the family or model is unknown.
    """
    try:
        fam, mod = int(family), int(model)
    except ValueError:
        return None
    if vendor == "AuthenticAMD":
        if fam == 23:
            return "zen2" if mod >= 0x30 else "zen1"
        if fam == 25:
            return "zen4" if 0x10 <= mod <= 0x1F or 0x60 <= mod <= 0x7F or 0xA0 <= mod <= 0xAF else "zen3"
        if fam == 26:
            return "zen5"
    if vendor == "GenuineIntel" and fam == 6 and mod in INTEL_SERVER_MODELS:
        return INTEL_SERVER_MODELS[mod]
    return f"f{fam}m{mod}"


def _model_words(name: str) -> str:
    text = name.lower()
    text = re.sub(r"\(r\)|\(tm\)|®|™", " ", text)
    text = re.sub(r"@.*$", " ", text)  # clock speed
    text = re.sub(r"\b(cpu|processor|\d+-core|core\(s\)|with radeon graphics|graphics)\b", " ", text)
    text = re.sub(r"\bintel\b\s+", " ", text)  # "Intel Xeon Platinum 8480+" -> xeon-platinum-8480
    text = re.sub(r"\b(platinum|gold|silver|bronze)\b", " ", text)
    words = re.findall(r"[a-z0-9]+", text)
    return "-".join(words[:4]) or "unknown"


#: The fingerprint fields that name a CPU's microarchitecture (a slug such as ``cpu-amd-epyc-2c``
#: does not: cloud VMs hide the model number, and one slug has been Zen 3, Zen 4 and Zen 5).
CPU_ID_FIELDS = ("cpu_vendor", "cpu_family", "cpu_model_id")


def cpu_mismatch(fingerprint: dict[str, Any], cpuinfo: dict[str, str] | None = None) -> str | None:
    """How the CPU of a table's ``fingerprint`` differs from this one (vendor, family, model id); None if alike or unknown."""
    here = _cpu_ids(read_cpuinfo() if cpuinfo is None else cpuinfo)
    if not all(str(fingerprint.get(k) or "") and here[k] for k in CPU_ID_FIELDS):
        return None
    if all(str(fingerprint[k]) == here[k] for k in CPU_ID_FIELDS):
        return None

    def name(f: dict[str, Any]) -> str:
        return f"{f['cpu_vendor']} family {f['cpu_family']} model {f['cpu_model_id']}"

    return f"measured on {name(fingerprint)}, this machine is {name(here)}"


def _cpu_ids(info: dict[str, str]) -> dict[str, str]:
    """The :data:`CPU_ID_FIELDS` of a fingerprint, from ``/proc/cpuinfo`` fields."""
    return {"cpu_vendor": info.get("vendor_id", ""), "cpu_family": info.get("cpu family", ""), "cpu_model_id": info.get("model", "")}


def fingerprint_slug(fingerprint: dict[str, Any]) -> str:
    """The slug :func:`cpu_slug` gives the CPU a table's ``fingerprint`` describes (its cpuinfo fields, read back)."""
    info = {"model name": str(fingerprint.get("cpu_model") or ""), "vendor_id": str(fingerprint.get("cpu_vendor") or ""),
            "cpu family": str(fingerprint.get("cpu_family") or ""), "model": str(fingerprint.get("cpu_model_id") or "")}
    return cpu_slug(info, int(fingerprint.get("logical_cores") or 1))


def device_fingerprint(gpu: bool = False) -> dict[str, Any]:
    """CPU model, cores and memory; GPU name and driver when ``gpu`` and CUDA is present."""
    info = read_cpuinfo()
    fingerprint: dict[str, Any] = {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        **_cpu_ids(info),
        "logical_cores": logical_cores(),
        "machine": platform.machine(),
        "memory_gib": _memory_gib(),
        "l3_cache": _l3_cache(),
        "gpu_name": None,
        "gpu_driver": None,
    }
    if gpu:
        fingerprint.update(_gpu_fingerprint())
    return fingerprint


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _l3_cache() -> str | None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                return (index / "size").read_text().strip()
        except OSError:
            continue
    return None


def l3_cache_bytes(text: str | None = None) -> int:
    """Size of the last-level cache in bytes: this machine's, or ``text`` as sysfs writes it ("32768K"); 32 MiB when unknown."""
    text = text or _l3_cache() or "32768K"
    match = re.match(r"(\d+)([KMG]?)", text)
    if not match:
        return 32 * 2**20
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2)]
    return int(match.group(1)) * scale


def _gpu_fingerprint() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, ValueError):
        driver = None
    return {
        "gpu_name": props.name,
        "gpu_driver": driver,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


def software_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change latency (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in SOFTWARE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def major_minor(version: str | None) -> str | None:
    if version is None:
        return None
    parts = re.findall(r"\d+", version.split("+")[0])
    return ".".join(parts[:2]) if parts else version


# --------------------------------------------------------------------------- bandwidth


@dataclass(frozen=True)
class Bandwidth:
    """This machine's measured memory bandwidth (GB/s = 1e9 bytes/s), best of several passes."""

    copy_gb_s: float  # STREAM-style copy: (read + write bytes) / time
    read_gb_s: float  # a reduction over the buffer: read bytes / time
    gemv_gb_s: float  # a matrix-vector product over the buffer (what a decode step does): matrix bytes / time
    buffer_mib: int
    threads: int
    passes: int

    @property
    def bound_gb_s(self) -> float:
        """The fastest rate weights can be streamed at: a decode step can never beat bytes / this."""
        return max(self.copy_gb_s, self.read_gb_s, self.gemv_gb_s)

    def best(self, other: Bandwidth) -> Bandwidth:
        """Field-wise best of two measurements (e.g. 1 thread and N threads, start and end of a run)."""
        return Bandwidth(
            copy_gb_s=max(self.copy_gb_s, other.copy_gb_s),
            read_gb_s=max(self.read_gb_s, other.read_gb_s),
            gemv_gb_s=max(self.gemv_gb_s, other.gemv_gb_s),
            buffer_mib=max(self.buffer_mib, other.buffer_mib),
            threads=max(self.threads, other.threads),
            passes=self.passes + other.passes,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bandwidth:
        return cls(**{k: data[k] for k in ("copy_gb_s", "read_gb_s", "gemv_gb_s", "buffer_mib", "threads", "passes")})

    def to_dict(self) -> dict[str, Any]:
        return {
            "copy_gb_s": round(self.copy_gb_s, 2),
            "read_gb_s": round(self.read_gb_s, 2),
            "gemv_gb_s": round(self.gemv_gb_s, 2),
            "bound_gb_s": round(self.bound_gb_s, 2),
            "buffer_mib": self.buffer_mib,
            "threads": self.threads,
            "passes": self.passes,
            "method": "torch copy_, sum and mv over a buffer far larger than the last-level cache; "
            "best of passes, of 1 and N threads, and of the start and end of the run",
        }


def measure_bandwidth(buffer_mib: int = 512, passes: int = 15, threads: int | None = None) -> Bandwidth:
    """Copy, read and GEMV benchmarks over a ``buffer_mib`` buffer (it should exceed the L3 cache many times).

    Best of ``passes`` each: on a shared machine only the best pass shows what the memory system
    can do, and a bound must not be lower than what a measured block achieves.
    """
    import torch

    threads = threads or logical_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n = buffer_mib * 2**20 // 4
        src = torch.ones(n, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)  # touch pages
        nbytes = n * 4
        cols = 1024
        matrix = src.view(-1, cols)  # (n / 1024, 1024)
        vector = torch.ones(cols)
        best_copy = best_read = best_gemv = float("inf")
        for _ in range(passes):
            start = time.perf_counter()
            dst.copy_(src)
            best_copy = min(best_copy, time.perf_counter() - start)
            start = time.perf_counter()
            float(src.sum())
            best_read = min(best_read, time.perf_counter() - start)
            start = time.perf_counter()
            torch.mv(matrix, vector)
            best_gemv = min(best_gemv, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return Bandwidth(
        copy_gb_s=2 * nbytes / best_copy / 1e9,
        read_gb_s=nbytes / best_read / 1e9,
        gemv_gb_s=nbytes / best_gemv / 1e9,
        buffer_mib=buffer_mib,
        threads=threads,
        passes=passes,
    )


def best_bandwidth(buffer_mib: int = 512, threads: int | None = None, passes: int = 15) -> Bandwidth:
    """The best of :func:`measure_bandwidth` with one thread and with ``threads``.

    On a busy machine one thread often streams faster than two that wait for each other.
    """
    threads = threads or logical_cores()
    one = measure_bandwidth(buffer_mib, passes, threads=1)
    return one if threads == 1 else one.best(measure_bandwidth(buffer_mib, passes, threads=threads))


def measure_matmul_gflops(size: int = 1024, passes: int = 5, threads: int | None = None) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of this CPU: the compute roof of the CPU roofline."""
    import torch

    threads = threads or logical_cores()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(passes):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


# --------------------------------------------------------------------------- load


class LoadMonitor:
    """How much CPU other processes used while we measured (from /proc/stat and /proc/self/stat).

    ``background_cpu_share`` is the fraction of the machine's CPU time spent by *other*
    processes between ``start()`` and ``stop()``; above ``UNDER_LOAD_SHARE`` a table is marked
    as measured under load.
    """

    UNDER_LOAD_SHARE = 0.10

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            values = [int(v) for v in fields]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            busy_machine = (sum(values[:8]) - idle) / ticks
            self_fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            busy_self = (int(self_fields[11]) + int(self_fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            return (time.monotonic(), 0.0, 0.0)
        return (time.monotonic(), busy_machine, busy_self)

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, Any]:
        if self._start is None:
            raise RuntimeError("LoadMonitor.stop() before start()")
        t0, machine0, self0 = self._start
        t1, machine1, self1 = self._sample()
        elapsed = max(t1 - t0, 1e-9)
        others = max((machine1 - machine0) - (self1 - self0), 0.0)
        share = others / (elapsed * (os.cpu_count() or 1))
        return {
            "seconds": round(elapsed, 2),
            "background_cpu_share": round(min(share, 1.0), 3),
            "loadavg_1m_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
