"""Latency predictors on this CPU's measured tables: held-out accuracy beside three baselines, and speed.

    python benchmarks/predictor.py                       # every measured table of this CPU
    python benchmarks/predictor.py --refit --holdout 0.4  # refit first (same seeded split)
    python benchmarks/predictor.py --refit --only onnxruntime/qwen2.5-0.5b  # one table
    python benchmarks/predictor.py --device cpu-amd-epyc-zen4-2c  # another CPU's tables (scoring measures nothing)

For each measured table of this machine (``latency_tables/<this cpu>/<runtime>/<name>.csv``):
fit the predictor if none is saved with the same held-out share (or ``--refit``), then report
on the whole-model rows it never saw, per workload. The held-out share is ``--holdout``, raised
in steps of 0.05 (to at most 0.8) until every workload holds out ``--min-held-out`` shapes
(the issue's bar: 50), so a table with few whole-model shapes fits on fewer. Reported: n, RMSE, MAPE, the share within 5 % and 10 %, and Kendall's tau, for
the learned predictor, the plain lookup-table sum, the roofline estimate and a FLOPs-linear fit.
Beside them, how much the table's own passes disagreed (the protocol's ``rounds``: slowest pass over the
fastest, median over the whole-model points), the measurement noise no predictor can beat.

Speed: one batch call on ``--batch`` random shapes of the model's space (median of 5 calls,
shapes per second), and one single-shape call (median of 200).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ("learned", "lut_sum", "roofline", "flops_linear")


def random_shapes(space: Any, n: int, seed: int = 0) -> list[Any]:
    from nas.shape import Shape

    rng = random.Random(seed)
    pairs, ffns = space.head_choices(), space.ffn_choices(64)
    shapes = []
    for _ in range(n):
        depth = rng.randint(1, space.num_layers)
        heads, kv = rng.choice(pairs)
        shapes.append(Shape(layers=tuple(range(depth)), heads=heads, kv_heads=kv, ffn=rng.choice(ffns)).resolve(space))
    return shapes


def holdout_for(table_path: Path, start: float, want: int) -> float:
    """The smallest held-out share from ``start`` (steps of 0.05, at most 0.8) holding out ``want`` shapes per main workload."""
    from nas.predictor.model import _by_workload, split_rows
    from profilers.tables import load_table

    whole = [r for r in load_table(table_path, check_software=False).rows if r["block"] == "whole-model"]
    # the workloads with shapes enough for the bar (a table's main ones); the others (12 shapes at
    # another batch or length) are scored on what the split holds out of them
    main = {w for w, rows in _by_workload(whole).items() if len(rows) >= 2 * want}
    fraction = start
    while fraction < 0.8:
        _, held = split_rows(whole, fraction, 0)
        if all(len(rows) >= want for w, rows in _by_workload(held).items() if w in main):
            break
        fraction = round(fraction + 0.05, 2)
    return min(fraction, 0.8)


def pass_noise(table_path: Path) -> float | None:
    """Median over the whole-model points of (slowest pass / fastest pass - 1), where the table kept its passes."""
    meta = json.loads((table_path.parent / "meta.json").read_text())["tables"][table_path.stem]
    by_point = (meta.get("passes") or {}).get("values_by_point") or {}
    if not by_point:
        return None
    values = [max(v) / min(v) - 1.0 for k, v in by_point.items() if k.startswith("whole-model")]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=str(ROOT / "latency_tables"))
    parser.add_argument("--device", default=None,
                        help="score the tables of this slug (default: this machine's; scoring measures nothing)")
    parser.add_argument("--refit", action="store_true")
    parser.add_argument("--holdout", type=float, default=0.4)
    parser.add_argument("--min-held-out", type=int, default=50, help="held-out shapes per workload to aim for")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--only", action="append", default=[], metavar="RUNTIME/NAME",
                        help="score only this table (repeatable), e.g. onnxruntime/qwen2.5-0.5b")
    args = parser.parse_args(argv)

    from nas.errors import AnyshapeError
    from nas.predictor.api import predictor_for
    from nas.predictor.evaluate import evaluate_predictor
    from nas.workload import Workload
    from profilers.environment import cpu_slug
    from profilers.tables import list_tables

    device = args.device or cpu_slug()
    print(f"# predictors on {device} ({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}\n")
    tables = [t for t in list_tables(args.tables) if t["device"] == device and t["source"] == "measured"]
    known = {f"{t['runtime']}/{t['name']}" for t in tables}
    if unknown := sorted(set(args.only) - known):
        print(f"no measured table {', '.join(unknown)} of {device} under {args.tables} (there are: {', '.join(sorted(known))})")
        return 1
    if args.only:
        tables = [t for t in tables if f"{t['runtime']}/{t['name']}" in args.only]
    if not tables:
        print(f"no measured tables of {device} under {args.tables}")
        return 1
    speed_rows = []
    print("| table | workload | method | n | RMSE ms | MAPE | <=5% | <=10% | tau |")
    print("|---|---|---|---|---|---|---|---|---|")
    for info in tables:
        meta = json.loads((Path(info["path"]).parent / "meta.json").read_text())["tables"][info["name"]]
        model = str(meta["model"])
        try:
            holdout = holdout_for(Path(info["path"]), args.holdout, args.min_held_out)
            predictor, spec = predictor_for(device, info["runtime"], model, tables_root=args.tables, table=info["name"],
                                            refit=args.refit, holdout_fraction=holdout)
            if predictor.recipe.holdout_fraction != holdout:  # saved with another split: refit on this one
                predictor, spec = predictor_for(device, info["runtime"], model, tables_root=args.tables, table=info["name"],
                                                refit=True, holdout_fraction=holdout)
            report = evaluate_predictor(predictor)
        except AnyshapeError as e:  # a table without enough whole-model rows: say so and go on
            print(f"| {info['runtime']}/{info['name']} | - | {e} | | | | | | |")
            continue
        label = f"{info['runtime']}/{info['name']}"
        for workload, entry in report["workloads"].items():
            for method in METHODS:
                if method in entry:
                    m = entry[method]
                    chosen = predictor.chosen_by_workload.get(workload) or predictor.chosen_by_workload.get("*") or predictor.chosen
                    name = f"**{method}** ({chosen}, holdout {holdout:g})" if method == "learned" else method
                    print(f"| {label} | {workload} | {name} | {m['n']} | {m['rmse_ms']:.3g} | {m['mape']:.1%} | "
                          f"{m['within_5pct']:.0%} | {m['within_10pct']:.0%} | {m['kendall_tau']:.3f} |")
        noise = pass_noise(Path(info["path"]))
        if noise is not None:
            print(f"| {label} | (all) | passes: slowest / fastest - 1, median | | | {noise:.1%} | | | |")
        space = spec.family.space(spec.config)
        shapes = random_shapes(space, args.batch)
        workload = Workload("prefill", 1, 128)
        predictor.predict(shapes[:10], workload)  # warm
        batch_s = statistics.median(_timed(predictor.predict, shapes, workload) for _ in range(5))
        single_s = statistics.median(_timed(predictor.predict, shapes[:1], workload) for _ in range(200))
        speed_rows.append((label, predictor.chosen, len(shapes) / batch_s, single_s * 1e3))
    print(f"\n| table | model | shapes/s (batch of {args.batch}) | one shape, ms |")
    print("|---|---|---|---|")
    for label, chosen, rate, single_ms in speed_rows:
        print(f"| {label} | {chosen} | {rate:,.0f} | {single_ms:.3f} |")
    return 0


def _timed(call: Any, *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
