"""Build (``--build``) and summarise the committed latency tables (docs/BENCHMARKS.md, issue 5).

    .venv/bin/python benchmarks/profile_tables.py --build     # measure + estimate every committed table
    .venv/bin/python benchmarks/profile_tables.py             # print the summary table

The summary reads each table's meta.json: build time (sum of its run segments, so a resumed
run counts only measuring time), rows, file size, background CPU load while measuring, and for
measured tables the reference probe's p10-p90 over the run, how far the slowest of the passes
was from the fastest (median over points), and the median roofline / measured ratio on this CPU (roofs: the copy/read memory
bandwidth and fp32 GEMM rate measured at the start of the run).
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
#: (~80 to fit, ~50 held out) where a table builds in reasonable time on 2 cores. ONNX Runtime
#: exports every whole Qwen2.5-0.5B shape (10-50 s each, and 0.1-2 GB: too big to keep for a
#: second pass), so that table has 80 shapes (the first 80 of the torch table's 120: same seed)
#: measured in 5 staggered passes (each graph exported once, its session kept for its passes;
#: the Zen 5 table had 7 with prefill probe-scaled), with ORT's spinning off. Every table anchors
#: every phase it has (--anchor, --anchor-prefill: each sample timed beside a fixed mid-size step, kept
#: loaded): on a noisy VM probe-scaled torch tables scored 35-79 % within 10 %, anchored 100 %
#: (docs/PROFILING.md, protocol item 5).
MINILM_GRID = '{"whole_model_samples": 130, "whole_model_ffn_steps": 32}'
MODELS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "minilm": ("minilm", {"torch": ["--grid", MINILM_GRID, "--rounds", "5", "--anchor-prefill"],
                          "onnxruntime": ["--grid", MINILM_GRID, "--rounds", "5", "--no-spinning", "--anchor-prefill"]}),
    "ref-llama-12l": (
        "ref-decoder",
        {"torch": ["--grid", '{"whole_model_samples": 130}', "--rounds", "9", "--anchor", "--anchor-prefill"],
         "onnxruntime": ["--grid", '{"whole_model_samples": 130}', "--rounds", "9", "--no-spinning", "--anchor", "--anchor-prefill"]},
    ),
    "qwen2.5-0.5b": (
        "qwen2.5-0.5b",
        {"torch": ["--grid", '{"whole_model_samples": 120}', "--rounds", "3", "--anchor", "--anchor-prefill"],
         "onnxruntime": ["--grid", '{"whole_model_samples": 80, "head_pairs": 7}', "--rounds", "5", "--stagger", "--no-spinning", "--anchor",
                         "--anchor-prefill"]},
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
        row["probe_p10_p90"] = row["pass_spread"] = "-"
        try:
            table = load_table(info["path"], check_software=False)
        except Exception as e:  # show the table as broken, keep going
            row["source"] = f"error: {e}"
            rows.append(row)
            continue
        meta = table.meta
        if table.source == "measured":
            row["build_s"] = meta.get("build_seconds")
            row["load"] = meta.get("load", {}).get("background_cpu_share")
            probe = (meta.get("reference") or {}).get("probe_ms_p10_p90")
            if probe:
                row["probe_p10_p90"] = f"{probe[0]:.3g}-{probe[1]:.3g} ms"
            passes = meta.get("passes") or {}
            if passes:
                row["pass_spread"] = f"{passes['rounds']}x: {passes['slowest_over_fastest_median']:.1%}"
            bandwidth = meta.get("memory_bandwidth", {}).get("bound_gb_s")
            gflops = meta.get("matmul_gflops")
            if bandwidth and gflops:
                spec = resolve_model_spec(str(meta["model"]))  # the table's own model (alias, config or path)
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
