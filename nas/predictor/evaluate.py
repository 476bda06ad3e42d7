"""How good a predictor is, on measured whole-model shapes it never saw, beside three baselines.

Baselines: the plain lookup-table sum of blocks, the roofline estimate
(``max(bytes / bandwidth, FLOPs / peak)`` with the table's measured bandwidth and matmul
throughput, or the device's spec sheet), and a FLOPs-linear fit on the same fitting rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.errors import AnyshapeError
from nas.predictor.model import LatencyPredictor, _by_workload, row_shape, split_rows, table_bandwidth_gb_s


def metrics(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE, share within 5 % and 10 %, and Kendall's tau of the ranking."""
    from scipy.stats import kendalltau

    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = np.abs(p - m) / m
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    return {
        "n": len(p),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "mape": float(np.mean(rel)),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "kendall_tau": tau,
    }


def evaluate_predictor(predictor: LatencyPredictor) -> dict[str, Any]:
    """Metrics per workload on the held-out rows, for the predictor and each baseline."""
    from profilers.tables import load_table

    table = load_table(predictor.recipe.table, check_software=False)
    whole = [r for r in table.rows if r["block"] == "whole-model"]
    fit_rows, held = split_rows(whole, predictor.recipe.holdout_fraction, predictor.recipe.seed)
    if not held:
        raise AnyshapeError("this predictor holds out no rows (holdout_fraction 0); nothing to evaluate on")
    gflops = table.meta.matmul_gflops
    bandwidth = table_bandwidth_gb_s(table)
    report: dict[str, Any] = {"table": table.label, "source": table.source, "chosen": predictor.chosen, "cv_mape": predictor.cv_mape, "workloads": {}}
    fit_groups = _by_workload(fit_rows)
    for workload, rows in sorted(_by_workload(held).items(), key=lambda kv: kv[0].name):
        shapes = [row_shape(r) for r in rows]
        measured = [r["latency_ms_p50"] for r in rows]
        assert predictor._lut is not None
        entry: dict[str, Any] = {
            "learned": metrics(predictor.predict(shapes, workload), measured),
            "lut_sum": metrics([predictor._lut.total_ms(s, workload) for s in shapes], measured),
        }
        costs = [predictor._cost(s, workload) for s in shapes]
        if bandwidth and gflops:
            roof = [max((c.weight_bytes + c.activation_bytes) / (bandwidth * 1e9), c.flops / (gflops * 1e9)) * 1e3 for c in costs]
            entry["roofline"] = metrics(roof, measured)
        train = fit_groups.get(workload, [])
        if len(train) >= 2:
            f = np.array([predictor._cost(row_shape(r), workload).flops for r in train])
            slope, intercept = np.polyfit(f, [r["latency_ms_p50"] for r in train], 1)
            entry["flops_linear"] = metrics([slope * c.flops + intercept for c in costs], measured)
        flags = predictor.flags(shapes, workload)
        entry["below_bandwidth_bound"] = sum(1 for f in flags if f)
        report["workloads"][workload.name] = entry
    return report
