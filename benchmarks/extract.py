"""Extraction time and peak memory vs copying the same weight files (the physical limit).

    python benchmarks/extract.py [--repeats 5] [--models minilm,qwen2.5-0.5b]

For each model: copy the base weight files (``shutil.copyfile``, same filesystem; the kernel
may copy without touching user space), read and write them through user space, and extract a half-depth,
half-width subnet; each run is a fresh subprocess (so peak RSS is its own), the two are
interleaved, and medians are reported. The Qwen2.5-0.5B-config model has random bf16
weights (as the released checkpoint stores bf16), built once into ~/.cache/anyshape/bench.
The page cache is warm for both (the base files were just read); hashing is cached too and
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN_CONFIG = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    torch_dtype="bfloat16",
)

CHILD = r"""
import json, shutil, sys, time
from pathlib import Path
mode, src, dst, shape = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
from nas.hub import weight_files, weights_sha256
from nas.extract import extract
from nas.shape import Shape
def hwm_mb():  # peak RSS of this process (ru_maxrss survives execve; VmHWM does not)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
before = hwm_mb()
start = time.perf_counter()
if mode == "copy":
    dst.mkdir()
    for f in weight_files(src):
        shutil.copyfile(f, dst / f.name)
elif mode == "rw":  # the same bytes through user space: read, then write a new file
    dst.mkdir()
    for f in weight_files(src):
        data = f.read_bytes()
        (dst / f.name).write_bytes(data)
elif mode == "hash":
    import nas.hub, os
    os.environ["ANYSHAPE_CACHE_DIR"] = str(dst)  # empty cache: a cold hash
    weights_sha256(src)
else:
    extract(str(src), Shape.from_dict(shape), dst)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm_mb(), "rss_before_mb": before}))
"""


def qwen_dir() -> Path:
    root = Path(os.environ.get("ANYSHAPE_CACHE_DIR", Path.home() / ".cache" / "anyshape")) / "bench" / "qwen2.5-0.5b-random-bf16"
    if (root / "model.safetensors").is_file():
        return root
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**QWEN_CONFIG)
    with torch.device("meta"):
        meta = Qwen2ForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for name, p in meta.state_dict().items():
        if name == "lm_head.weight":  # tied to the embeddings, as in the released checkpoint
            continue
        tensors[name] = (torch.randn(p.shape, generator=gen) * 0.02).to(torch.bfloat16)
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(root)
    return root


def run_child(mode: str, src: Path, dst: Path, shape: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst), json.dumps(shape)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{mode} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(name: str, src: Path, shape: dict, repeats: int, work: Path) -> dict:
    from nas.hub import weight_files, weights_sha256

    weights_sha256(src)  # warm the hash cache and the page cache
    size_mb = sum(f.stat().st_size for f in weight_files(src)) / 2**20
    runs: dict[str, list[dict]] = {"copy": [], "rw": [], "extract": []}
    for i in range(repeats):
        for mode in ("copy", "rw", "extract"):
            runs[mode].append(run_child(mode, src, work / f"{name}-{mode}-{i}", shape))
    cold_hash = run_child("hash", src, work / f"{name}-hashcache", shape)
    out_mb = (work / f"{name}-extract-0" / "model.safetensors").stat().st_size / 2**20
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    peak = {m: statistics.median(r["peak_rss_mb"] for r in rs) for m, rs in runs.items()}
    base_rss = statistics.median(r["rss_before_mb"] for r in runs["extract"])
    return {
        "model": name,
        "weights_mb": round(size_mb, 1),
        "subnet_mb": round(out_mb, 1),
        "shape": shape,
        "copy_s_p50": round(med["copy"], 3),
        "extract_s_p50": round(med["extract"], 3),
        "ratio": round(med["extract"] / med["copy"], 2),
        "read_write_s_p50": round(med["rw"], 3),
        "ratio_vs_read_write": round(med["extract"] / med["rw"], 2),
        "extract_peak_rss_mb": round(peak["extract"], 0),
        "extract_rss_after_imports_mb": round(base_rss, 0),
        "copy_peak_rss_mb": round(peak["copy"], 0),
        "cold_sha256_s": round(cold_hash["seconds"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="minilm,qwen2.5-0.5b")
    args = parser.parse_args()
    from nas.hub import resolve_model

    cases = {
        "minilm": (resolve_model("minilm").path, {"layers": [0, 1, 2], "ffn": 768}),
        "qwen2.5-0.5b": (None, {"layers": list(range(0, 24, 2)), "heads": 7, "kv_heads": 1, "ffn": 2432}),
    }
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        for name in args.models.split(","):
            src, shape = cases[name]
            rows.append(bench(name, src or qwen_dir(), shape, args.repeats, Path(tmp)))
    print(f"# extract benchmark, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, repeats={args.repeats}")
    cols = ["model", "weights_mb", "subnet_mb", "copy_s_p50", "read_write_s_p50", "extract_s_p50", "ratio", "ratio_vs_read_write", "extract_peak_rss_mb", "extract_rss_after_imports_mb", "copy_peak_rss_mb", "cold_sha256_s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    for row in rows:
        print(f"{row['model']} shape: {json.dumps(row['shape'])}")


if __name__ == "__main__":
    main()
