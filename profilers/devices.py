"""Device slugs and the published specs of devices we estimate but cannot measure here.

Slugs are stable folder names under ``latency_tables/``: ``cpu-<vendor-model>-<N>c`` for a CPU
(derived from /proc/cpuinfo, see :func:`profilers.environment.cpu_slug`), and the named GPUs
below. Adding a device is one :class:`DeviceSpec` and one line in :data:`DEVICES`.

Dense FP16 tensor throughput is what a transformer block in fp16 can at best reach; datasheets
often print the 2:4-sparse figure, which is twice the dense one. Where a sheet gives only the
sparse figure we halve it and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nas.errors import AnyshapeError


@dataclass(frozen=True)
class DeviceSpec:
    """Published numbers of one device: the roofs of its roofline."""

    slug: str
    name: str
    kind: Literal["cuda", "cpu"]
    memory_bandwidth_gb_s: float
    fp16_dense_tflops: float
    memory_gib: float
    sources: tuple[str, ...]
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.memory_bandwidth_gb_s > 0:
            raise AnyshapeError(f"device {self.slug}: memory_bandwidth_gb_s must be > 0")
        if not self.fp16_dense_tflops > 0:
            raise AnyshapeError(f"device {self.slug}: fp16_dense_tflops must be > 0")


# NVIDIA RTX A5000 (GA102, 64 SMs, 256 third-generation tensor cores, boost 1.695 GHz, 24 GB GDDR6, 384-bit).
# Datasheet: https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/rtx/nvidia-rtx-a5000-datasheet.pdf
# "Memory bandwidth 768 GB/s", "Tensor performance 222.2 TFLOPS" (with sparsity) -> 111.1 dense FP16.
# Check: 64 SMs x 4 TCs x 256 FP16 FLOP/clk x 1.695 GHz = 111.1 TFLOPS.
A5000 = DeviceSpec(
    slug="a5000",
    name="NVIDIA RTX A5000 24GB",
    kind="cuda",
    memory_bandwidth_gb_s=768.0,
    fp16_dense_tflops=111.1,
    memory_gib=24.0,
    sources=("https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/rtx/nvidia-rtx-a5000-datasheet.pdf",),
    notes="222.2 TFLOPS tensor is the 2:4-sparse figure; dense FP16 is half",
)

# NVIDIA H100 SXM5 80GB. Datasheet: https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM column):
# "GPU memory bandwidth 3.35 TB/s", "FP16 Tensor Core 1,979 teraFLOPS*" (* with sparsity) -> 989.4 dense.
# The PCIe card is slower (2.0 TB/s, 756 dense FP16 TFLOPS); measure it to replace this estimate.
H100 = DeviceSpec(
    slug="h100",
    name="NVIDIA H100 SXM5 80GB",
    kind="cuda",
    memory_bandwidth_gb_s=3350.0,
    fp16_dense_tflops=989.4,
    memory_gib=80.0,
    sources=("https://www.nvidia.com/en-us/data-center/h100/",),
    notes="SXM5 numbers; 1,979 TFLOPS is the sparse figure",
)

# Jetson AGX Orin 64GB (GA10B GPU: 16 SMs / 2048 CUDA cores / 64 tensor cores at up to 1.3 GHz;
# 64 GB 256-bit LPDDR5). Jetson AGX Orin Series Technical Brief v1.2 and the module data sheet:
# https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/nvidia-jetson-agx-orin-technical-brief.pdf
# "204.8 GB/s" memory bandwidth; GPU "170 sparse INT8 TOPS" -> 85 dense INT8 -> 42.5 dense FP16 TFLOPS.
# Check: 16 SMs x 4 TCs x 512 FP16 FLOP/clk x 1.3 GHz = 42.6 TFLOPS.
JETSON_AGX_ORIN_64GB = DeviceSpec(
    slug="jetson-agx-orin-64gb",
    name="NVIDIA Jetson AGX Orin 64GB (MAXN)",
    kind="cuda",
    memory_bandwidth_gb_s=204.8,
    fp16_dense_tflops=42.5,
    memory_gib=64.0,
    sources=(
        "https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/nvidia-jetson-agx-orin-technical-brief.pdf",
        "https://developer.nvidia.com/embedded/jetson-modules",
    ),
    notes="GPU only (the DLAs add 105 sparse INT8 TOPS but are not used by torch / ONNX Runtime CUDA)",
)

# Jetson Orin Nano 8GB (8 SMs / 1024 CUDA cores / 32 tensor cores at 625 MHz; 8 GB 128-bit LPDDR5).
# Data sheet DS-11105 (https://developer.nvidia.com/embedded/jetson-modules): "68 GB/s",
# "40 (sparse) INT8 TOPS and 20 (dense)" -> 10 dense FP16 TFLOPS (8 x 4 x 512 x 0.625 GHz = 10.2).
# "Super" mode (JetPack 6.1+, 25 W; Jetson Orin Nano Super Developer Kit data sheet, Dec 2024):
# GPU 1020 MHz, 67 sparse INT8 TOPS, 102 GB/s -> see JETSON_ORIN_NANO_8GB_SUPER.
JETSON_ORIN_NANO_8GB = DeviceSpec(
    slug="jetson-orin-nano-8gb",
    name="NVIDIA Jetson Orin Nano 8GB (15 W)",
    kind="cuda",
    memory_bandwidth_gb_s=68.0,
    fp16_dense_tflops=10.2,
    memory_gib=8.0,
    sources=(
        "https://developer.nvidia.com/embedded/jetson-modules",
        "https://developer.nvidia.com/blog/nvidia-jetson-orin-nano-developer-kit-gets-a-super-boost/",
    ),
    notes="original (non-Super) clocks; Super mode: 102 GB/s and ~16.7 dense FP16 TFLOPS",
)

JETSON_ORIN_NANO_8GB_SUPER = DeviceSpec(
    slug="jetson-orin-nano-8gb-super",
    name="NVIDIA Jetson Orin Nano 8GB Super (25 W)",
    kind="cuda",
    memory_bandwidth_gb_s=102.0,
    fp16_dense_tflops=16.7,
    memory_gib=8.0,
    sources=("https://developer.nvidia.com/blog/nvidia-jetson-orin-nano-developer-kit-gets-a-super-boost/",),
    notes="8 SMs x 4 TCs x 512 FP16 FLOP/clk x 1.02 GHz",
)

#: Every GPU we know the specs of; slug -> spec.
DEVICES: dict[str, DeviceSpec] = {
    d.slug: d for d in (A5000, H100, JETSON_AGX_ORIN_64GB, JETSON_ORIN_NANO_8GB, JETSON_ORIN_NANO_8GB_SUPER)
}

#: Substrings of ``torch.cuda.get_device_name()`` that identify each GPU when it is measured.
CUDA_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "a5000": ("A5000",),
    "h100": ("H100",),
    "jetson-agx-orin-64gb": ("Orin",),
    "jetson-orin-nano-8gb": ("Orin",),
    "jetson-orin-nano-8gb-super": ("Orin",),
}


def device_spec(slug: str) -> DeviceSpec:
    """The published spec of a GPU slug, or a one-line error listing the known ones."""
    if slug in DEVICES:
        return DEVICES[slug]
    raise AnyshapeError(f"unknown device {slug!r}; known: {', '.join(known_devices())}")


def known_devices() -> list[str]:
    from profilers.environment import cpu_slug

    return [cpu_slug(), *DEVICES]


def check_device_name(slug: str) -> Literal["cpu", "cuda"]:
    """Validate a ``--device`` value: this machine's CPU slug, another CPU slug, or a known GPU."""
    from profilers.environment import cpu_slug

    if slug in DEVICES:
        return "cuda"
    if slug.startswith("cpu-"):
        here = cpu_slug()
        if slug != here:
            raise AnyshapeError(
                f"device {slug!r} is not this machine's CPU ({here}); run anyshape profile on that machine, "
                f"or use --device {here}"
            )
        return "cpu"
    raise AnyshapeError(f"unknown device {slug!r}; known: {', '.join(known_devices())}")
