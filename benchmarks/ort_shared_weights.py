"""Does ONNX Runtime share initializers of equal content? A chain of MatMuls with equal and with distinct weights.

    .venv/bin/python benchmarks/ort_shared_weights.py            # 40 MatMuls of 896x4864 / 4864x896 (Qwen2.5-0.5B's MLP)
    .venv/bin/python benchmarks/ort_shared_weights.py --layers 20 --rounds 9

Until 2026-11-29 every parameter of a profiled model was filled from the start of one seeded
pool, so all same-shaped weights were equal, and ONNX Runtime tables measured models whose
layers shared their weights. This benchmark shows the effect on a plain graph: the same chain
of fp32 MatMuls (batch 1, ``--threads`` intra-op threads, spinning off) whose matrices are
(a) all equal within each shape, (b) distinct slices of the same pool (what
``profilers.blocks.fill_random_`` does now), (c) independent random draws; beside this machine's
memory read bandwidth. Printed: per variant the median and best of ``--rounds`` rounds of
``--calls`` calls, as ms per call and as GB/s of weight bytes, and how much the process's
resident memory grew when the session was created and first run (what ONNX Runtime keeps of
the weights). Variants run interleaved round by round, so a slow stretch of a shared machine
hits all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("equal", "distinct slices", "independent")


def chain(variant: str, layers: int, hidden: int, ffn: int, folder: Path, seed: int = 0) -> Path:
    """An ONNX graph of ``layers`` MatMuls alternating (hidden x ffn) and (ffn x hidden), saved under ``folder``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(1 << 20) * 0.02).astype(np.float32)
    doubled = np.concatenate([pool, pool])
    starts = rng.permutation(pool.size)[:layers]
    inits, nodes, current = [], [], "x"
    for i in range(layers):
        shape = (hidden, ffn) if i % 2 == 0 else (ffn, hidden)
        n = shape[0] * shape[1]
        if variant == "independent":
            w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        else:
            start = 0 if variant == "equal" else int(starts[i])
            w = np.resize(doubled[start : start + pool.size], n).reshape(shape)  # tiled from its start
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"y{i}"]))
        current = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / f"{variant.replace(' ', '-')}.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location=f"{path.stem}.data")
    return path


def resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc/self/statm``; 0 elsewhere)."""
    import os

    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--ffn", type=int, default=4864)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    from profilers.environment import cpu_slug, measure_bandwidth

    weight_bytes = args.layers * args.hidden * args.ffn * 4
    print(f"# {args.layers} fp32 MatMuls, {args.hidden}x{args.ffn} / {args.ffn}x{args.hidden} "
          f"({weight_bytes / 1e9:.2f} GB), batch 1, {args.threads} threads; {cpu_slug()}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    with tempfile.TemporaryDirectory(prefix="anyshape-ort-shared-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        feed = {"x": np.ones((1, args.hidden), dtype=np.float32)}
        sessions, grew = {}, {}
        for variant in VARIANTS:
            path = chain(variant, args.layers, args.hidden, args.ffn, Path(tmp))
            before = resident_bytes()
            sessions[variant] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            sessions[variant].run(None, feed)
            grew[variant] = resident_bytes() - before
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, session in sessions.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    session.run(None, feed)
                times[variant].append((time.perf_counter() - start) / args.calls * 1e3)
        read = measure_bandwidth(512, 10, threads=args.threads)
    print("| weights | ms per call, median | best | GB/s at the median | at the best | resident memory the session added |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        median, best = statistics.median(times[variant]), min(times[variant])
        print(f"| {variant} | {median:.2f} | {best:.2f} | {weight_bytes / median / 1e6:.1f} | {weight_bytes / best / 1e6:.1f} "
              f"| {grew[variant] / 1e9:.2f} GB |")
    print(f"\nthis machine's memory (torch, 512 MiB, {args.threads} threads, best of 10): read {read.read_gb_s:.1f} GB/s, "
          f"copy {read.copy_gb_s:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
