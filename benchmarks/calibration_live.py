"""Live: calibrate on this machine, then time random extracted subnets in fresh processes, as a user would.

    .venv/bin/python benchmarks/calibration_live.py [--model minilm] [--shapes 10] [--subnets 30] [--prior auto]

1. ``anyshape calibrate`` on this machine (K = ``--shapes``), in its own process, timed.
2. ``--subnets`` random shapes (seeded, none of the calibration's), each extracted to a stock
   checkpoint and timed in a fresh Python process: ``AutoModel.from_pretrained``, b=1, s=128, all
   cores, 5 warm-up calls, then the median of ``--calls`` calls (plain torch loop, wall clock).
   The full model is timed the same way before, between and after them: the host's own drift.
3. The calibrated prediction and the uncalibrated one (the calibration's prior as it is) beside
   each measurement: share within 10 %, MAPE, Kendall tau.
4. The host's own ceiling beside them: every subnet is timed a second time, in a second pass
   over them, and the second measurement is scored as a "prediction" of the first (no predictor
   can agree with a measurement better than the measurement agrees with itself a few minutes
   later); and the calibrated predictor with its level re-fitted afterwards on the 30
   measurements themselves (the best any calibration's level could have done).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIMER = r"""
import sys, time, statistics, torch
from transformers import AutoModel
torch.set_num_threads(int(sys.argv[3]))
model = AutoModel.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(0, model.config.vocab_size, (1, 128))
with torch.inference_mode():
    for _ in range(5):
        model(input_ids=ids)
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        model(input_ids=ids)
        times.append((time.perf_counter() - start) * 1e3)
print(statistics.median(times))
"""


def time_fresh(path: Path, calls: int, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", TIMER, str(path), str(calls), str(threads)], check=True, capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"})  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau

    error = np.abs(predicted / measured - 1)
    return {"within_10pct": float((error <= 0.10).mean()), "mape": float(error.mean()),
            "tau": float(kendalltau(predicted, measured).statistic)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--shapes", type=int, default=10, help="K of the calibration")
    parser.add_argument("--prior", default=None, help="calibrate's --prior (default: table if this CPU has one, else auto)")
    parser.add_argument("--subnets", type=int, default=30)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--tables", type=Path, default=Path("latency_tables"))
    args = parser.parse_args(argv)

    from nas.extract import extract
    from nas.predictor.api import predictor_for
    from nas.predictor.calibration import CalibratedPredictor
    from nas.shape import Shape
    from nas.workload import Workload
    from profilers.environment import cpu_slug, logical_cores
    from profilers.run import resolve_model_spec

    device, workload = cpu_slug(), Workload()
    name = resolve_model_spec(args.model).name
    prior = args.prior or ("table" if (args.tables / device / args.runtime / f"{name}.csv").is_file() else "auto")
    print(f"# live calibration on {device}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.model}, {args.runtime}, "
          f"{workload.name}, K={args.shapes}, prior {prior}\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas.cli", "calibrate", "--device", device, "--runtime", args.runtime, "--model", args.model,
                    "--shapes", str(args.shapes), "--prior", prior, "--tables", str(args.tables), "--workload", workload.name,
                    "--no-progress"], check=True)  # fmt: skip
    calibrate_s = time.perf_counter() - start
    predictor, spec = predictor_for(device, args.runtime, args.model, tables_root=args.tables)
    assert isinstance(predictor, CalibratedPredictor), "the calibration just made does not apply"
    record = predictor.record
    taken = {tuple(s.values()) for s in record.workloads[workload.name].shapes}
    space = spec.family.space(spec.config)
    rng = random.Random(args.seed)
    shapes: list[Shape] = []
    while len(shapes) < args.subnets:
        depth, ffn = rng.randint(1, space.num_layers), rng.choice(space.ffn_choices(16))
        heads, kv = rng.choice(space.head_choices())
        if (depth, heads, kv, ffn) in taken:
            continue
        taken.add((depth, heads, kv, ffn))
        shapes.append(Shape(layers=tuple(sorted(rng.sample(range(space.num_layers), depth))), heads=heads, kv_heads=kv, ffn=ffn))
    threads = logical_cores()
    full_times: list[float] = []
    measured: list[float] = []
    with tempfile.TemporaryDirectory(prefix="anyshape-live-") as scratch:
        full_dir = Path(scratch) / "full"
        extract(args.model, space.full_shape(), full_dir)
        t0 = time.perf_counter()
        for i, shape in enumerate(shapes):
            if i % 10 == 0:
                full_times.append(time_fresh(full_dir, args.calls, threads))
            out = Path(scratch) / f"s{i}"
            extract(args.model, shape, out)
            measured.append(time_fresh(out, args.calls, threads))
        full_times.append(time_fresh(full_dir, args.calls, threads))
        again = [time_fresh(Path(scratch) / f"s{i}", args.calls, threads) for i in range(len(shapes))]
        timing_s = time.perf_counter() - t0
    measured_a = np.array(measured)
    calibrated = np.asarray(predictor.predict(shapes, workload))
    raw = np.asarray(predictor.prior.predict(shapes, workload))
    summary = record.workloads[workload.name].summary()
    print(f"\ncalibration {record.id}: {calibrate_s:.0f} s (K={summary['k']}, prior {record.prior.get('label')}, correction "
          f"{summary['correction']}, scale {summary['scale']:.3f}, slope {summary['slope']:.3f}; leave-one-out MAPE "
          f"{summary['mape_before']:.1%} -> {summary['mape_after_loo']:.1%})")
    print(f"{args.subnets} subnets extracted and timed in fresh processes in {timing_s:.0f} s; the full model, timed "
          f"{len(full_times)} times among them: {min(full_times):.2f}-{max(full_times):.2f} ms "
          f"(spread {(max(full_times) - min(full_times)) / statistics.median(full_times):.0%} of the median)\n")
    print("| predictor | n | within 10 % | MAPE | Kendall tau |")
    print("|---|---|---|---|---|")
    best_level = calibrated * float(np.median(measured_a / calibrated))
    rows = (("calibrated", calibrated), ("uncalibrated (the prior as it is)", raw),
            ("ceiling: calibrated, level re-fitted on these 30 afterwards", best_level),
            ("ceiling: the same subnets timed again (second pass)", np.array(again)))
    for label, predicted in rows:
        s = scores(predicted, measured_a)
        print(f"| {label} | {len(measured)} | {s['within_10pct']:.0%} | {s['mape']:.1%} | {s['tau']:.3f} |")
    print("\n| depth | ffn | measured ms | again ms | calibrated ms | error | uncalibrated ms |")
    print("|---|---|---|---|---|---|---|")
    for shape, m, m2, c, r in sorted(zip(shapes, measured, again, calibrated, raw), key=lambda z: z[1]):
        print(f"| {len(shape.layers or ())} | {shape.ffn} | {m:.2f} | {m2:.2f} | {c:.2f} | {c / m - 1:+.1%} | {r:.2f} |")
    print(json.dumps({"calibrated": scores(calibrated, measured_a), "uncalibrated": scores(raw, measured_a),
                      "refitted_level": scores(best_level, measured_a), "again": scores(np.array(again), measured_a)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
