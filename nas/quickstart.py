"""``anyshape quickstart``: the whole pipeline on the embedded default model (MiniLM), on this CPU.

    1. supernet   the trained MiniLM supernet shipped in ``nas/assets/minilm-supernet`` (fine-tuned by
                  ``scripts/ship_minilm_supernet.py``, numbers in docs/BENCHMARKS.md); for another model, or
                  base weights that differ, calibrate one (reused while the base weights match)
    2. table      the committed CPU table for this machine; on a CPU kind with none, the other CPUs'
                  tables (the best of them is chosen by step 3), or a quick profile when none loads
    3. calibrate  time 10 whole-model shapes here and now and correct the table's predictor to
                  this machine (``anyshape calibrate``; about a minute)
    4. search     NSGA-II over depth x FFN width, under a latency budget
    5. export     the feasible Pareto front as subnet configs, CSV and plot
    6. verify     extract the most accurate shape under the budget, measure it here
    7. tasks      the best shape's scores on human-judged sets (:mod:`nas.supernet.judged`) beside the base
                  model's (encoders; skipped, and said so, when the sets cannot be fetched)

Everything is written under ``studies/quickstart/``; a new run replaces the previous study.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError
from nas.workload import Workload

#: Quick-profile grid when no committed table fits this machine: every FFN step, many whole models.
QUICK_GRID = {"ffn_steps": 8, "whole_model_samples": 40}


@dataclass
class QuickstartResult:
    out: Path
    device: str
    runtime: str
    workload: str
    budget_ms: float
    supernet: Path
    table: str
    table_source: str
    predictor: str
    trials: int
    pareto_configs: int
    best_config: Path
    best_shape: dict[str, Any]
    metric: str
    best_accuracy: float
    predicted_latency_ms: float
    measured_latency_ms: float
    full_latency_ms: float
    seconds: dict[str, float] = field(default_factory=dict)
    #: The best shape's measurement at the machine speed its table was measured at (None: calibrated, raw compared).
    measured_latency_ms_table_speed: float | None = None
    #: This machine's calibration of the predictor (``WorkloadCalibration.summary``: K, errors before and after).
    calibration: dict[str, Any] | None = None
    #: Whether the supernet searched is fine-tuned (its shapes carry merged adapters).
    trained: bool = False
    #: Human-judged set -> {"metric", "best", "base"}: the best shape's score beside the base model's.
    task_scores: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.full_latency_ms / self.measured_latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, the speed-up included."""
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return {**data, "speedup": self.speedup}


def run_quickstart(
    out: str | Path = "studies/quickstart",
    *,
    model: str = "minilm",
    runtime: str = "torch",
    trials: int = 60,
    budget_fraction: float = 0.5,
    tables: str | Path = "latency_tables",
    seed: int = 0,
    calibration_shapes: int = 10,
    say: Callable[[str], None] = lambda message: None,
    progress: bool = True,
) -> QuickstartResult:
    """Run the pipeline end to end; ``say`` receives one line per stage (``calibration_shapes``: K of the
    calibration); ``progress``: bars and phase lines on stderr for the stages that take more than a moment."""
    from nas.families import family_for
    from nas.hub import resolve_model
    from nas.predictor.calibration import MIN_SHAPES
    from nas.search.run import SearchConfig, run_search
    from nas.supernet.artifact import Supernet
    from nas.verify import measure_latency, verify
    from profilers.environment import cpu_slug
    from profilers.protocol import live_protocol
    from profilers.tables import find_tables_root

    if not 0 < budget_fraction <= 1:
        raise AnyshapeError(f"budget fraction is {budget_fraction}; allowed range (0, 1]")
    if not MIN_SHAPES <= calibration_shapes <= 100:  # refused before anything is copied or timed
        raise AnyshapeError(f"--calibration-shapes is {calibration_shapes}; allowed range {MIN_SHAPES}..100 (about 10 is enough)")
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    device = cpu_slug()
    workload = Workload()
    seconds: dict[str, float] = {}

    with _timed(seconds, "supernet"):
        supernet_dir = _supernet(model, out / "supernet", say, progress)
        supernet = Supernet.load(supernet_dir)
    with _timed(seconds, "table"):
        tables_root, table_name, prior = _table(model, device, runtime, find_tables_root(tables), out, say, progress)
    with _timed(seconds, "calibrate"):
        predictor, summary = _calibrated_predictor(device, runtime, model, tables_root, table_name, prior, workload,
                                                   calibration_shapes, seed, say, progress)

    full = supernet.space.full_shape()
    budget_ms = round(float(predictor.predict([full], workload)[0]) * budget_fraction, 3)
    study_dir = out / "study"
    shutil.rmtree(study_dir, ignore_errors=True)
    config = SearchConfig(
        study="quickstart", trials=trials, factory="nas.search.factory:supernet_problem",
        factory_args={"supernet": str(supernet_dir), "tables": str(tables_root), "table": table_name, "calibrated": True},
        device=device, runtime=runtime, workload=workload, storage=f"sqlite:///{study_dir / 'study.db'}", seed=seed,
        latency_budget_ms=budget_ms,
    )  # fmt: skip
    say(f"search: {trials} trials, NSGA-II, latency budget {budget_ms:g} ms ({budget_fraction:.0%} of the full model's prediction)")
    with _timed(seconds, "search"):
        run_search(config, progress=progress)
    with _timed(seconds, "export"):
        pareto_configs, best, best_config = _export_best(config.storage_url, out / "pareto", say)
    with _timed(seconds, "verify"):
        result = verify(best_config, device, runtime, out=out / "best", storage=config.storage_url, progress=progress)
        source = resolve_model(model)
        family = family_for(source.config_dict())
        full_measured = measure_latency(source, family, full, workload, runtime, "cpu", live_protocol())
    with _timed(seconds, "tasks"):
        task_scores = _task_scores(supernet_dir, family.kind, supernet.resolve_shape(result.shape), say)
    return QuickstartResult(
        out=out, device=device, runtime=runtime, workload=workload.name, budget_ms=budget_ms, supernet=supernet_dir,
        table=predictor.label, table_source=predictor.source, predictor=predictor.chosen, trials=trials,
        pareto_configs=pareto_configs, best_config=best_config, best_shape=result.shape, metric=result.metric,
        best_accuracy=result.measured_accuracy, predicted_latency_ms=float(best.values[1]),
        measured_latency_ms=result.measured_latency_ms, full_latency_ms=full_measured.latency_ms_p50, seconds=seconds,
        measured_latency_ms_table_speed=result.measured_latency_ms_table_speed, calibration=summary,
        trained=supernet.adapters is not None, task_scores=task_scores,
    )  # fmt: skip


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[stage]`` (the quickstart's closing line)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = time.perf_counter() - start


def _calibrated_predictor(device: str, runtime: str, model: str, tables_root: Path, table: str, prior: str, workload: Workload,
                          shapes: int, seed: int, say: Callable[[str], None], progress: bool) -> tuple[Any, dict[str, Any]]:
    """Calibrate the table's predictor to this machine (``anyshape calibrate``) and load it calibrated."""
    from nas.predictor.api import predictor_for
    from nas.predictor.calibration import calibrate, is_calibrated

    record = calibrate(device, runtime, model, tables_root=tables_root, table=table, prior=prior, workloads=[workload],
                       shapes=shapes, seed=seed, say=say, progress=progress).record
    summary = record.workloads[workload.name].summary()
    say(f"calibrated against {record.prior.get('label')}: prediction error on the {summary['k']} shapes timed here "
        f"{summary['mape_before']:.1%} before, {summary['mape_after_loo']:.1%} after (leave-one-out)")
    predictor, _ = predictor_for(device, runtime, model, tables_root=tables_root, table=table, allow_lut_only=True)
    if not is_calibrated(predictor, workload):
        raise AnyshapeError("the calibration just made does not apply (see the note above); run anyshape calibrate to see why")
    say(f"predictor: {predictor.chosen} on {predictor.label}")
    return predictor, summary


def _export_best(storage: str, out: Path, say: Callable[[str], None]) -> tuple[int, Any, Path]:
    """Export the study's feasible front; (configs written, the most accurate trial, its config file)."""
    from nas.search.export import export_study
    from nas.search.storage import load_study, pareto_trials

    export = export_study(storage, "quickstart", out)
    study = load_study(storage, "quickstart")
    maximize = study.directions[0].name == "MAXIMIZE"
    best = max(pareto_trials(study), key=lambda tr: tr.values[0] if maximize else -tr.values[0])
    best_config = next(p for p in export.configs if p.name.endswith(f"-t{best.number}.yaml"))
    say(f"export: {len(export.configs)} Pareto configs; best under the budget: trial {best.number} {best.user_attrs['shape']}")
    return len(export.configs), best, best_config


#: model alias -> the trained supernet shipped for it.
SHIPPED_SUPERNETS = {"minilm": Path(__file__).resolve().parent / "assets" / "minilm-supernet"}


def _supernet(model: str, path: Path, say: Callable[[str], None], progress: bool) -> Path:
    """The shipped trained supernet of ``model`` (copied to ``path``), else ``path`` when it is a supernet
    of these base weights, else a newly built one."""
    from nas._io import atomic_directory
    from nas.hub import resolve_model, weights_sha256
    from nas.supernet.artifact import Supernet
    from nas.supernet.build import build_supernet

    sha = weights_sha256(resolve_model(model).path)

    def matches(directory: Path) -> Supernet | None:
        try:
            supernet = Supernet.load(directory) if (directory / "supernet.json").is_file() else None
        except AnyshapeError:
            return None
        return supernet if supernet is not None and supernet.base_sha256 == sha else None

    shipped = SHIPPED_SUPERNETS.get(model)
    existing = matches(path)
    if shipped is not None and (candidate := matches(shipped)) is not None:
        if existing is not None and existing.sha256() == candidate.sha256():
            say(f"supernet: reusing {path} (the shipped fine-tuned supernet)")
            return path
        with atomic_directory(path, overwrite=True) as tmp:
            for file in shipped.iterdir():
                if file.is_file() and file.name != "README.md":
                    shutil.copy2(file, tmp / file.name)
        say(f"supernet: the shipped fine-tuned supernet ({shipped.name}, see its README) copied to {path}")
        return path
    if existing is not None:
        say(f"supernet: reusing {path}")
        return path
    say(f"supernet: calibrating {model} (depth DP and width orders; not fine-tuned: see anyshape supernet train)")
    build_supernet(model, path, overwrite=True, progress=progress)
    return path


def _task_scores(supernet_dir: Path, kind: str, shape: Any, say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The best shape's scores on the human-judged sets beside the base model's (encoders only)."""
    from nas.search.factory import ShapeTaskScores
    from nas.supernet.judged import judged_sets
    from nas.supernet.tasks import load_task

    if kind != "encoder":
        return {}
    try:
        specs = judged_sets(say=say)
    except AnyshapeError as e:
        say(f"task scores skipped: {e}")
        return {}
    scorer = ShapeTaskScores(supernet_dir, specs)
    best, base = scorer(shape), scorer.base()
    scores = {name: {"metric": load_task(spec).metric, "best": best[name], "base": base[name]} for name, spec in specs.items()}
    say("task scores of the best shape (base model): " + ", ".join(
        f"{name} {v['best']:.3f} ({v['base']:.3f})" for name, v in scores.items()))
    return scores


def _table(model: str, device: str, runtime: str, tables: Path, out: Path, say: Callable[[str], None],
           progress: bool) -> tuple[Path, str, str]:
    """Where the prior comes from: (tables root, table name, ``calibrate``'s prior).

    The committed table for this machine if it loads; else, on a CPU kind with no table, every
    other CPU's committed table, of which the calibration keeps the one that predicts this machine
    best (a few shapes timed here instead of a whole profile); else a quick profile under ``out``.
    """
    from profilers.run import profile, resolve_model_spec
    from profilers.tables import load_table
    from profilers.workload import GridConfig

    name = resolve_model_spec(model).name
    committed = tables / device / runtime / f"{name}.csv"
    if committed.is_file():
        try:
            load_table(committed, device=device, runtime=runtime)
            say(f"latency table: {committed}")
            return tables, name, "table"
        except AnyshapeError as e:
            say(f"latency table: {committed} does not fit this machine ({e})")
    others = []
    for path in sorted(tables.glob(f"cpu-*/{runtime}/{name}.csv")):
        try:
            others.append(load_table(path, runtime=runtime).device)
        except AnyshapeError:
            continue
    if others:
        say(f"latency table: none committed for {device}/{runtime}; the calibration picks the best prior of {', '.join(others)}")
        return tables, name, "auto"
    say(f"latency table: none usable for {device}/{runtime}; profiling {model} quickly")
    local = out / "latency_tables"
    if not (local / device / runtime / f"{name}.csv").is_file():
        grid = GridConfig(phases=("prefill",), ffn_steps=QUICK_GRID["ffn_steps"], whole_model_samples=QUICK_GRID["whole_model_samples"])
        profile(model, device, runtime, local, grid=grid, progress=progress)
    return local, name, "table"
