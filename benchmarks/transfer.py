"""Leave one device out: how well does another CPU's table (or a roofline) plus K measurements predict a CPU kind?

    .venv/bin/python benchmarks/transfer.py [--tables latency_tables] [--k 0 5 10 20] [--seeds 10]

For every committed measured CPU table (runtime, model) and every workload with whole-model rows,
each other CPU kind's table of the same runtime and model is a prior, and so is the roofline of
the target's own measured roofs (meta.json: copy bandwidth, GEMM rate). K of the target's
whole-model rows stand for the K shapes ``anyshape calibrate`` times: chosen as calibrate chooses
(the full model, then even steps of the prior's predicted latency; ``span``) or at random
(``random``, averaged over ``--seeds``). The correction is fit with calibrate's own code
(:func:`nas.predictor.calibration.choose_correction`) and scored on the target's other rows:
share within 10 %, MAPE, Spearman. K = 0 is the prior as it is. ``auto`` picks, per target, the
prior with the lowest leave-one-out error on the K rows, as ``calibrate --prior auto`` does.
Nothing is measured: it runs on the committed tables anywhere.

Anchor: HELP (NeurIPS 2021) reaches Spearman 0.932 with 10 samples on unseen devices.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def score(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    error = np.abs(predicted / measured - 1.0)
    return {"within_10pct": float((error <= 0.10).mean()), "mape": float(error.mean()), "spearman": spearman(predicted, measured)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=Path, default=Path("latency_tables"))
    parser.add_argument("--k", type=int, nargs="+", default=[0, 5, 10, 20])
    parser.add_argument("--seeds", type=int, default=10, help="random draws of K rows per cell")
    args = parser.parse_args(argv)

    from nas.errors import AnyshapeError
    from nas.predictor.api import predictor_for
    from nas.predictor.calibration import RooflinePrior, choose_correction, spanning_indices
    from nas.predictor.model import row_shape, row_workload
    from profilers.run import resolve_model_spec
    from profilers.tables import list_tables, load_table

    start = time.perf_counter()
    tables = [t for t in list_tables(args.tables) if t["device"].startswith("cpu-") and t["source"] == "measured"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in tables:
        groups[(t["runtime"], t["name"])].append(t)
    print(f"# transfer to an unseen CPU kind, {time.strftime('%Y-%m-%d')}; tables under {args.tables}\n")
    cells: dict[tuple[str, int, str], list[dict[str, float]]] = defaultdict(list)  # (prior kind, K, selection) -> scores
    print("| runtime/table | workload | target | prior | K | selection | n | <=10% | MAPE | Spearman |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (runtime, name), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        meta = json.loads((Path(members[0]["path"]).parent / "meta.json").read_text())["tables"][name]
        model = str(meta["model"])
        spec = resolve_model_spec(model)
        priors: dict[str, Any] = {}
        for t in members:
            try:
                priors[t["device"]], _ = predictor_for(t["device"], runtime, model, tables_root=args.tables, table=name,
                                                       allow_lut_only=True, calibrated=False)  # fmt: skip
            except AnyshapeError as e:
                print(f"| {runtime}/{name} | - | {t['device']} | not a prior: {e} | | | | | | |")
        for target in members:
            table = load_table(target["path"], check_software=False)
            gflops, bandwidth = float(table.meta.matmul_gflops or 0), table.meta.bandwidth_gb_s
            candidates = {d: p for d, p in priors.items() if d != target["device"]}
            if gflops and bandwidth:
                candidates["roofline"] = RooflinePrior.for_cpu(dict(spec.config), bandwidth, gflops, target["device"])
            by_workload: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for row in table.rows:
                if row["block"] == "whole-model":
                    by_workload[row_workload(row)].append(row)
            for workload, rows in sorted(by_workload.items(), key=lambda kv: kv[0].name):
                shapes = [row_shape(r) for r in rows]
                measured = np.array([r["latency_ms_p50"] for r in rows])
                full = int(np.argmax([(r["depth"], r["heads"], r["ffn"]) for r in rows]))
                predicted = {}
                for d, p in candidates.items():
                    try:
                        predicted[d] = np.asarray(p.predict(shapes, workload), dtype=float)
                    except AnyshapeError:  # a prior without this workload (the target's table has more) is no prior for it
                        continue
                for k in args.k:
                    if k and len(rows) - k < 10:
                        continue
                    draws = [("span", None)] if k == 0 else [("span", None)] + [("random", s) for s in range(args.seeds)]
                    for selection, seed in draws:
                        per_prior: dict[str, tuple[dict[str, float], float]] = {}
                        for d, pred in predicted.items():
                            if k == 0:
                                pick: list[int] = []
                            elif seed is None:
                                pick = spanning_indices(np.log(pred), k, first=full)
                            else:
                                pick = sorted(np.random.default_rng(seed).choice(len(rows), k, replace=False).tolist())
                            rest = np.setdiff1d(np.arange(len(rows)), pick) if k else np.arange(len(rows))
                            if k:
                                correction, loo = choose_correction(pred[pick], measured[pick])
                                corrected, loo_error = correction.apply(pred[rest]), loo[correction.kind]
                            else:
                                corrected, loo_error = pred[rest], float("nan")
                            per_prior[d] = (score(corrected, measured[rest]), loo_error)
                            kind = "roofline" if d == "roofline" else "other CPU table"
                            cells[(kind, k, selection)].append(per_prior[d][0])
                            if selection == "span":
                                s = per_prior[d][0]
                                print(f"| {runtime}/{name} | {workload.name} | {target['device']} | {d} | {k} | span | {len(rest)} | "
                                      f"{s['within_10pct']:.0%} | {s['mape']:.1%} | {s['spearman']:.3f} |")
                        if k:  # what calibrate --prior auto would have kept
                            best = min(per_prior, key=lambda d: per_prior[d][1])
                            cells[("auto", k, selection)].append(per_prior[best][0])
    print("\n## Summary: median over targets x workloads (x priors; random: x draws)\n")
    print("| prior | K | selection | cells | <=10% | MAPE | Spearman |")
    print("|---|---|---|---|---|---|---|")
    for (kind, k, selection), scores in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        def med(key: str, values: list[dict[str, float]] = scores) -> float:
            return statistics.median(v[key] for v in values)

        print(f"| {kind} | {k} | {selection} | {len(scores)} | {med('within_10pct'):.0%} | {med('mape'):.1%} | {med('spearman'):.3f} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
