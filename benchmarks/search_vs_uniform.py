"""The searched Pareto front against the uniform baselines, at equal predicted latency.

    python benchmarks/search_vs_uniform.py --model minilm --trials 100 --verify 3
    python benchmarks/search_vs_uniform.py --model ref-decoder --table ref-llama-12l --trials 100 --verify 3

Builds (or reuses) the model's supernet under ~/.cache/anyshape/bench, runs a fresh search on
this CPU's latency table, and prints: the hypervolume of the searched front and of the uniform
baselines (drop-last depth x uniform width) with one common reference point; the best accuracy
each reaches under three latency budgets (25 / 50 / 75 % of the full model's prediction);
trials per minute; and, for ``--verify N`` exported points, predicted vs measured latency.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float], maximize: bool) -> float:
    """2-D hypervolume of (accuracy, latency) points: accuracy maximised (or minimised), latency minimised."""
    pts = [((a if maximize else -a), lat) for a, lat in points]
    ref_a, ref_l = (ref[0] if maximize else -ref[0]), ref[1]
    pts = sorted(p for p in pts if p[0] > ref_a and p[1] < ref_l)
    volume, best_lat = 0.0, ref_l
    for acc, lat in reversed(pts):  # from the most accurate down
        if lat < best_lat:
            volume += (acc - ref_a) * (best_lat - lat)
            best_lat = lat
    return volume


def best_under(points: list[tuple[float, float]], budget: float, maximize: bool) -> float | None:
    ok = [a for a, lat in points if lat <= budget]
    if not ok:
        return None
    return max(ok) if maximize else min(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--table", default=None, help="latency table name (default: the model's)")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--verify", type=int, default=3, help="exported points to extract and measure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nas.search.export import export_study
    from nas.search.run import SearchConfig, run_search
    from nas.search.storage import load_study, pareto_trials
    from nas.supernet.artifact import Supernet
    from nas.supernet.build import build_supernet
    from nas.verify import verify
    from nas.workload import Workload
    from profilers.environment import cpu_slug

    root = Path(os.environ.get("ANYSHAPE_CACHE_DIR", Path.home() / ".cache" / "anyshape")) / "bench"
    supernet_dir = root / f"supernet-{args.model}"
    if not (supernet_dir / "supernet.json").is_file():
        build_supernet(args.model, supernet_dir, overwrite=True)
    Supernet.load(supernet_dir)  # validates a cached supernet before the search uses it
    device = cpu_slug()
    work = root / f"search-{args.model}"
    shutil.rmtree(work, ignore_errors=True)
    config = SearchConfig(
        study="bench", trials=args.trials, factory="nas.search.factory:supernet_problem",
        factory_args={"supernet": str(supernet_dir), "tables": str(Path("latency_tables").absolute()), "table": args.table},
        device=device, runtime=args.runtime, workload=Workload(), storage=f"sqlite:///{work / 'study.db'}", seed=args.seed,
    )  # fmt: skip
    start = time.perf_counter()
    result = run_search(config, progress=True)
    minutes = (time.perf_counter() - start) / 60
    study = load_study(config.storage_url, "bench")
    maximize = study.directions[0].name == "MAXIMIZE"
    front = [(t.values[0], t.values[1]) for t in pareto_trials(study)]
    baselines = [(b["accuracy"], b["latency_ms"]) for b in study.user_attrs["baselines"]]
    everything = front + baselines
    worst_acc = min(a for a, _ in everything) if maximize else max(a for a, _ in everything)
    ref = (worst_acc, max(lat for _, lat in everything) * 1.01)
    full_ms = max(b["latency_ms"] for b in study.user_attrs["baselines"] if b.get("fraction") == 1.0)
    metric = study.user_attrs.get("accuracy_metric")

    print(f"# search vs uniform: {args.model}, {device} ({platform.machine()}, {os.cpu_count()} cores), {args.runtime}, "
          f"{time.strftime('%Y-%m-%d')}, {args.trials} trials, seed {args.seed}, metric {metric}, latency source {study.user_attrs.get('latency_source')}")  # fmt: skip
    print(f"trials per minute (whole run incl. setup and baselines): {args.trials / minutes:.1f}; "
          f"search loop only: {result.trials_per_minute:.1f}")
    print("| set | points | hypervolume |")
    print("|---|---|---|")
    print(f"| searched front | {len(front)} | {hypervolume(front, ref, maximize):.4g} |")
    print(f"| uniform baselines | {len(baselines)} | {hypervolume(baselines, ref, maximize):.4g} |")
    print(f"\n| budget (ms, % of full {full_ms:.3g}) | searched {metric} | uniform {metric} |")
    print("|---|---|---|")
    for fraction in (0.25, 0.5, 0.75):
        budget = full_ms * fraction
        s, u = best_under(front, budget, maximize), best_under(baselines, budget, maximize)
        print(f"| {budget:.3g} ({fraction:.0%}) | {'-' if s is None else f'{s:.4g}'} | {'-' if u is None else f'{u:.4g}'} |")
    if args.verify:
        exported = export_study(config.storage_url, "bench", work / "pareto")
        step = max(1, len(exported.configs) // args.verify)
        print("\n| config | predicted ms | measured ms (p50) | error | at table speed ms | error | accuracy (search) | accuracy (extracted) |")
        print("|---|---|---|---|---|---|---|---|")
        for path in exported.configs[::step][: args.verify]:
            v: Any = verify(path, device, args.runtime, storage=config.storage_url)
            speed = "- | -" if v.measured_latency_ms_table_speed is None else f"{v.measured_latency_ms_table_speed:.4g} | {v.table_speed_error:+.1%}"
            print(f"| {path.name} | {v.predicted_latency_ms:.4g} | {v.measured_latency_ms:.4g} | {v.latency_error:+.1%} | {speed} | "
                  f"{v.predicted_accuracy:.4g} | {v.measured_accuracy:.4g} |")  # fmt: skip


if __name__ == "__main__":
    main()
