"""Build (``--build``) and summarise the committed latency tables (docs/BENCHMARKS.md, issue 5).

    .venv/bin/python benchmarks/profile_tables.py --build     # measure + estimate every committed table
    .venv/bin/python benchmarks/profile_tables.py             # print the summary table

The summary reads each table's meta.json: build time (sum of its run segments, so a resumed
run counts only measuring time), rows, file size, background CPU load while measuring, and for
measured tables the protocol, how much the host's speed wandered over the run (meta.json
load.speed_spread), how far the slowest of the passes was from the fastest (median over points),
and the median roofline / measured ratio on this CPU (roofs: the copy/read memory bandwidth and
fp32 GEMM rate measured at the start of the run).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / ".venv" / "bin" / "anyshape")

#: table name -> (--model, extra arguments per runtime): enough whole-model shapes for a predictor
#: (~80 to fit, ~50 held out) at each phase's first workload (batch 1, 128 tokens), and 12 of the
#: same shapes at every other batch and length (the predictor learns those from batch and length
#: beside their block rows): batch 1-8, MiniLM lengths 128-512 (its positions), the reference
#: decoder's 128-2048 (rotary positions run past the 512 it was trained on). ONNX Runtime exports every whole Qwen2.5-0.5B shape (10-50 s each, and 0.1-2 GB: too big
#: to keep for a second pass), so that table has 80 shapes measured in staggered passes
#: (benchmarks/staggered.yaml). Every table uses the shared-vm preset: each sample timed beside a
#: fixed mid-size step of its workload (docs/PROFILING.md).
HERE = Path(__file__).resolve().parent
MINILM_GRID = ('{"whole_model_samples": 130, "whole_model_ffn_steps": 32, "other_workload_samples": 12, "workloads": '
               '["prefill:b1:s128", "prefill:b1:s256", "prefill:b1:s512", "prefill:b4:s128", "prefill:b8:s128", "prefill:b4:s512"]}')
DECODER_GRID = ('{"whole_model_samples": 130, "other_workload_samples": 12, "workloads": ["prefill:b1:s128", "prefill:b1:s512", '
                '"prefill:b1:s2048", "prefill:b4:s128", "prefill:b8:s128", "decode:b1:c128", "decode:b1:c512", "decode:b1:c2048", '
                '"decode:b4:c128", "decode:b8:c128"]}')
SHARED_VM = ["--protocol", "shared-vm"]
MODELS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "minilm": ("minilm", {"torch": ["--grid", MINILM_GRID, *SHARED_VM], "onnxruntime": ["--grid", MINILM_GRID, *SHARED_VM]}),
    "ref-llama-12l": ("ref-decoder", {"torch": ["--grid", DECODER_GRID, *SHARED_VM], "onnxruntime": ["--grid", DECODER_GRID, *SHARED_VM]}),
    "qwen2.5-0.5b": (
        "qwen2.5-0.5b",
        {"torch": ["--grid", '{"whole_model_samples": 120}', *SHARED_VM],
         "onnxruntime": ["--grid", '{"whole_model_samples": 80, "head_pairs": 7}', "--protocol", str(HERE / "staggered.yaml")]},
    ),
}
ESTIMATED_DEVICES = ("a5000", "jetson-agx-orin-64gb", "jetson-orin-nano-8gb")


def commands(out: str) -> list[list[str]]:
    from profilers.environment import cpu_slug

    here = cpu_slug()
    cmds = []
    for runtime in ("torch", "onnxruntime"):
        for name, (model, grids) in MODELS.items():
            cmd = [CLI, "profile", "--device", here, "--runtime", runtime, "--model", model, "--name", name, "--out", out]
            cmds.append(cmd + grids[runtime])
    for device in ESTIMATED_DEVICES:
        for name, (model, _) in MODELS.items():
            cmds.append([CLI, "profile", "--device", device, "--runtime", "torch", "--model", model, "--name", name,
                         "--out", out, "--estimate"])
    return cmds


def build(out: str, overwrite: bool, only: str | None = None) -> None:
    for cmd in commands(out):
        if only is not None and f"--name {only} " not in shlex.join(cmd) + " ":
            continue
        if overwrite:
            cmd = [*cmd, "--overwrite"]
        print("$", shlex.join(cmd[1:] if cmd[0] == CLI else cmd).replace("profile", "anyshape profile", 1), flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, check=False)
        print(f"  exit {done.returncode} after {time.perf_counter() - start:.0f} s", flush=True)


def summary(out: str) -> list[dict[str, object]]:
    from profilers.cost import ModelDims
    from profilers.roofline import ratios
    from profilers.run import resolve_model_spec
    from profilers.tables import list_tables, load_table

    rows = []
    for info in list_tables(out):
        row: dict[str, object] = {k: info[k] for k in ("device", "runtime", "name", "source", "rows")}
        row["size_kb"] = round(int(info["size_bytes"]) / 1024, 1)
        row["build_s"] = row["load"] = row["roofline/measured"] = row["decode"] = row["prefill"] = "-"
        row["protocol"] = row["speed_spread"] = row["pass_spread"] = "-"
        try:
            table = load_table(info["path"], check_software=False)
        except Exception as e:  # show the table as broken, keep going
            row["source"] = f"error: {e}"
            rows.append(row)
            continue
        meta = table.meta
        if table.source == "measured":
            row["build_s"] = meta.build_seconds
            row["load"] = meta.load.get("background_cpu_share")
            row["protocol"] = meta.protocol.name if meta.protocol else "-"
            if meta.load.get("speed_spread") is not None:
                row["speed_spread"] = f"{float(meta.load['speed_spread']):.1%}"
            if meta.passes:
                row["pass_spread"] = f"{meta.passes['rounds']}x: {meta.passes['slowest_over_fastest_median']:.1%}"
            bandwidth, gflops = meta.bandwidth_gb_s, meta.matmul_gflops
            if bandwidth and gflops:
                spec = resolve_model_spec(meta.model)  # the table's own model (alias, config or path)
                r = ratios(table, ModelDims.from_config(spec.family, spec.config), float(bandwidth), float(gflops))
                row["roofline/measured"] = round(r["all"], 3)
                for phase in ("decode", "prefill"):
                    value = r.get(f"whole-model/{phase}")
                    row[phase] = "-" if value is None else round(value, 3)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    if not rows:
        print("no tables")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("| " + " | ".join(c.ljust(widths[c]) for c in cols) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in cols) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]).ljust(widths[c]) for c in cols) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "latency_tables"))
    parser.add_argument("--build", action="store_true", help="run every profile / estimate command first")
    parser.add_argument("--overwrite", action="store_true", help="with --build: replace existing tables")
    parser.add_argument("--only", help="with --build: only the tables of this name")
    args = parser.parse_args(argv)
    if args.build:
        build(args.out, args.overwrite, args.only)
    print_table(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
