"""Run a multi-objective Optuna study over a supernet's shapes.

Objectives: the accuracy metric (its own direction) and predicted latency for the workload
(minimised), optionally memory (weights + KV cache, minimised). Budgets are constraints: every
trial sets them with ``trial.set_constraint`` (Optuna 5: samplers, ``study.best_trials``) and
mirrors them in ``system_attrs["constraints"]``, the pre-5 list that optuna-dashboard reads (and
no other); it also records its slack (``latency_slack_ms``, ``memory_slack_mb``: value minus
budget, feasible at or below 0) and ``feasible`` as user attributes. Every trial also records its shape, predicted latency, the latency table's source and
the supernet hash, which optuna-dashboard shows. Studies live in any SQLAlchemy URL; the default is a SQLite file under ``studies/``.

Resume and workers: re-running the same command continues the study until it holds
``trials`` complete trials; trials of a killed worker are detected by Optuna's heartbeat,
failed, and retried with the same shape. ``workers`` processes share the study; the trials
still missing are split between them, so a study ends with exactly ``trials`` complete trials.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nas._progress import bar, phase
from nas.errors import AnyshapeError
from nas.search.problem import SearchProblem, shape_key
from nas.search.storage import db_url, make_storage, pareto_trials, quiet_experimental
from nas.workload import Workload


@dataclass(frozen=True)
class SearchConfig:
    """One search run; the same config continues the same study."""

    study: str
    trials: int
    factory: str  # "module:function" building the SearchProblem from this config, in any process
    factory_args: Mapping[str, Any] = field(default_factory=dict)
    device: str = field(default_factory=lambda: _this_cpu())  # latency tables of this device
    runtime: str = "torch"
    workload: Workload = field(default_factory=Workload)
    storage: str | None = None
    workers: int = 1
    seed: int = 0
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    population_size: int = 16
    latency_budget_ms: float | None = None
    memory_budget_mb: float | None = None
    memory_objective: bool = False
    studies_dir: str = "studies"

    def __post_init__(self) -> None:
        if not self.study or "/" in self.study or self.study.startswith("."):
            raise AnyshapeError(f"--study {self.study!r} must be a plain name (it names a folder under studies/)")
        if not 1 <= self.trials <= 1_000_000:
            raise AnyshapeError(f"--trials is {self.trials}; allowed range 1..1000000")
        if not 1 <= self.workers <= 256:
            raise AnyshapeError(f"--workers is {self.workers}; allowed range 1..256")
        if self.sampler not in ("nsga2", "tpe"):
            raise AnyshapeError(f"--sampler is {self.sampler!r}; allowed: nsga2, tpe")
        if self.population_size < 2:
            raise AnyshapeError("--population-size must be at least 2")
        for name in ("latency_budget_ms", "memory_budget_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise AnyshapeError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if ":" not in self.factory:
            raise AnyshapeError(f"search factory {self.factory!r} must be 'module:function'")
        check_device_slug(self.device)
        if self.storage:  # a bad URL is refused before the set-up loads anything
            db_url(self.storage, "--storage", "sqlite:///path.db")

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{Path(self.studies_dir).absolute() / self.study / 'study.db'}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workload"] = self.workload.name
        data.pop("storage")
        data.pop("workers")
        return data


def _this_cpu() -> str:
    from profilers.environment import cpu_slug

    return cpu_slug()


_CPU_SLUG = re.compile(r"^cpu-[a-z0-9]+(?:-[a-z0-9]+)*-\d+c$")


def check_device_slug(slug: str) -> None:
    """A device a latency table can exist for: a known GPU slug, or any ``cpu-<model>-<N>c``.

    (A search may target another machine's CPU: it only reads that CPU's table.)"""
    from profilers.devices import DEVICES, known_devices

    if slug not in DEVICES and not _CPU_SLUG.match(slug):
        raise AnyshapeError(f"unknown device {slug!r}; known: {', '.join(known_devices())}, or cpu-<model>-<N>c")


@dataclass
class SearchResult:
    study: str
    storage: str
    complete_trials: int
    new_trials: int
    seconds: float
    pareto: list[dict[str, Any]]
    #: This machine's latency calibration the predictions used (None: the table's predictions as they are).
    calibration: dict[str, Any] | None = None

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.new_trials / self.seconds if self.seconds > 0 else 0.0


def build_problem(config: SearchConfig) -> SearchProblem:
    module, _, name = config.factory.partition(":")
    try:
        factory: Callable[[SearchConfig], SearchProblem] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise AnyshapeError(f"search factory {config.factory!r} cannot be imported") from None
    return factory(config)


def directions(config: SearchConfig, accuracy_direction: str) -> list[str]:
    return [accuracy_direction, "minimize"] + (["minimize"] if config.memory_objective else [])


def metric_names(config: SearchConfig, accuracy_metric: str) -> list[str]:
    return [accuracy_metric, "latency_ms"] + (["memory_mb"] if config.memory_objective else [])


def open_study(config: SearchConfig, problem: SearchProblem, *, worker: int = 0) -> Any:
    """Create or load the study; refuse one made by a different search config."""
    import optuna

    storage = make_storage(config.storage_url)
    sampler = make_sampler(config, worker)
    dirs: Any = directions(config, problem.accuracy.direction)
    study = optuna.create_study(study_name=config.study, storage=storage, directions=dirs, sampler=sampler, load_if_exists=True)
    stored = study.user_attrs.get("search_config")
    mine = config.to_dict()
    if stored is None:
        if worker == 0:
            with quiet_experimental():
                study.set_metric_names(metric_names(config, problem.accuracy.metric))
            study.set_user_attr("search_config", mine)
            study.set_user_attr("supernet_sha256", problem.supernet_sha256)
            study.set_user_attr("latency_source", problem.latency.source)
            study.set_user_attr("accuracy_metric", problem.accuracy.metric)
            study.set_user_attr("accuracy_direction", problem.accuracy.direction)
            for key, value in problem.provenance.items():
                study.set_user_attr(key, value)
    else:
        _check_same_calibration(study.user_attrs.get("latency_calibration"), problem.provenance.get("latency_calibration"))
        stored = {**stored, "factory_args": {"calibrated": False, **(stored.get("factory_args") or {})}}  # older studies: uncalibrated
        mine = {**mine, "factory_args": {"calibrated": False, **(mine.get("factory_args") or {})}}
        if stored["factory_args"]["calibrated"] != mine["factory_args"]["calibrated"]:
            made = "with" if stored["factory_args"]["calibrated"] else "without"
            raise AnyshapeError(f"study {config.study!r} was searched {made} this machine's latency calibration; continue it "
                                f"with --{'' if made == 'with' else 'no-'}calibration, or use another --study name")
        differing = sorted(k for k in mine if k not in ("trials", "seed") and stored.get(k) != mine[k])
        if differing:
            raise AnyshapeError(
                f"study {config.study!r} in {config.storage_url} was made with a different {', '.join(differing)}; "
                "use another --study name"
            )
    return study


def _check_same_calibration(stored: Any, mine: Any) -> None:
    """Every worker of a study predicts with the same calibration (it lives in one machine's cache)."""
    stored_id, my_id = (stored or {}).get("id"), (mine or {}).get("id")
    if stored_id != my_id:
        raise AnyshapeError(
            f"this worker's latency calibration ({my_id or 'none'}) is not the study's ({stored_id or 'none'}): a calibration "
            "belongs to the machine that made it; run the workers there, or search with --no-calibration everywhere"
        )


def make_sampler(config: SearchConfig, worker: int = 0) -> Any:
    import optuna

    seed = config.seed + 1009 * worker  # workers explore differently; worker 0 reproduces a one-worker run
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, config.trials))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population_size)


#: Where optuna-dashboard (0.21) reads a trial's constraints: the pre-Optuna-5 list, which the
#: search mirrors beside Optuna 5's named constraints.
DASHBOARD_CONSTRAINTS_KEY = "constraints"


def make_objective(config: SearchConfig, problem: SearchProblem, study: Any) -> Callable[[Any], tuple[float, ...]]:
    """The trial function: sample, resolve, score (accuracy cached by shape), record, constrain."""
    from optuna.trial import TrialState

    cache: dict[str, float] = {}

    def cached_accuracy(key: str, shape: Any) -> float:
        if key not in cache:  # another worker (or an earlier run) may have scored it
            for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                cache.setdefault(shape_key(done.user_attrs.get("shape", {})), float(done.values[0]))
        if key not in cache:
            cache[key] = float(problem.accuracy(shape))
        return cache[key]

    def objective(trial: Any) -> tuple[float, ...]:
        shape = problem.resolve(problem.space.suggest(trial))
        accuracy = cached_accuracy(shape_key(shape.to_dict()), shape)
        latency_ms = float(problem.latency.predict([shape], config.workload)[0])
        memory = problem.memory_mb(shape, config.workload)
        # each attribute is one database commit: the per-study facts (device, runtime, workload)
        # are study attributes instead
        trial.set_user_attr("shape", shape.to_dict())
        trial.set_user_attr("predicted_latency_ms", latency_ms)
        trial.set_user_attr("latency_source", problem.latency.source)
        trial.set_user_attr("memory_mb", round(memory, 3))
        trial.set_user_attr("supernet_sha256", problem.supernet_sha256)
        slack = {}  # constraint name -> (user attribute, value minus budget)
        if config.latency_budget_ms is not None:
            slack["latency_budget_ms"] = ("latency_slack_ms", latency_ms - config.latency_budget_ms)
        if config.memory_budget_mb is not None:
            slack["memory_budget_mb"] = ("memory_slack_mb", memory - config.memory_budget_mb)
        for name, (attr, value) in slack.items():
            trial.set_user_attr(attr, round(value, 6))
            trial.set_constraint(name, value)
        if slack:
            trial.set_user_attr("feasible", all(v <= 0 for _, v in slack.values()))
            trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_KEY, [v for _, v in slack.values()])
        values = (accuracy, latency_ms) + ((memory,) if config.memory_objective else ())
        return values

    return objective


def run_search(config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """Run (or continue) the study until it holds ``config.trials`` complete trials."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    with phase("search set-up (supernet, model, latency predictor, study)", progress):
        problem = build_problem(config)
        study = open_study(config, problem)
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    before = _count_complete(study)
    missing = max(config.trials - before, 0)
    if missing:
        shares = [missing // config.workers + (1 if i < missing % config.workers else 0) for i in range(config.workers)]
        shares = [s for s in shares if s]
        if len(shares) == 1:
            _optimize(config, problem, study, shares[0], progress=progress, total=config.trials, done=before)
        else:
            _run_workers(config, shares, progress=progress, total=config.trials, done=before, study=study)
    complete = _count_complete(study)
    if problem.baseline_shapes and "baselines" not in study.user_attrs:
        study.set_user_attr("baselines", score_baselines(config, problem, progress=progress))
    if complete < config.trials:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        reason = failed[-1].user_attrs.get("error", "see the worker logs") if failed else "workers stopped early"
        raise AnyshapeError(f"search stopped with {complete} of {config.trials} trials complete: {reason}")
    return SearchResult(
        study=config.study,
        storage=config.storage_url,
        complete_trials=complete,
        new_trials=complete - before,
        seconds=time.perf_counter() - start,
        pareto=[_trial_summary(t) for t in pareto_trials(study)],
        calibration=problem.provenance.get("latency_calibration"),
    )


def score_baselines(config: SearchConfig, problem: SearchProblem, *, progress: bool = False) -> list[dict[str, Any]]:
    """Accuracy and predicted latency of the uniform baselines, for the export's plot and benchmarks."""
    shapes = [problem.resolve({k: v for k, v in b.items() if k != "fraction"}) for b in problem.baseline_shapes]
    latencies = problem.latency.predict(shapes, config.workload)
    rows = []
    with contextlib.closing(bar(len(shapes), "uniform baselines", "shape", enabled=progress)) as done:
        for b, shape, lat in zip(problem.baseline_shapes, shapes, latencies):
            rows.append({"shape": shape.to_dict(), "fraction": b.get("fraction"), "accuracy": float(problem.accuracy(shape)),
                         "latency_ms": float(lat)})
            done.update(1)
    return rows


def _optimize(config: SearchConfig, problem: SearchProblem, study: Any, n_trials: int, *, progress: bool, total: int, done: int) -> None:
    objective = make_objective(config, problem, study)
    bar = _progress(total, done, progress)
    try:
        study.optimize(
            objective,
            n_trials=n_trials,
            callbacks=[lambda s, t: bar.update(1)],
            catch=(),
            gc_after_trial=False,
        )
    finally:
        bar.close()


def _worker_main(config: SearchConfig, worker: int, n_trials: int) -> None:
    """Entry point of a worker process (spawned): its own problem, sampler seed and connection."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = build_problem(config)
    study = open_study(config, problem, worker=worker)
    study.optimize(make_objective(config, problem, study), n_trials=n_trials, gc_after_trial=False)


def _run_workers(config: SearchConfig, shares: list[int], *, progress: bool, total: int, done: int, study: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(config, i, n), name=f"anyshape-search-{i}") for i, n in enumerate(shares)]
    for proc in procs:
        proc.start()
    bar = _progress(total, done, progress)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            bar.n = min(_count_complete(study), total)
            bar.refresh()
        bar.n = min(_count_complete(study), total)
        bar.refresh()
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise
    finally:
        bar.close()
        for proc in procs:
            proc.join(timeout=10)
    bad = [p.name for p in procs if p.exitcode]
    if bad:
        raise AnyshapeError(f"search worker(s) {', '.join(bad)} failed; finished trials are kept, run the same command to resume")


def _count_complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _trial_summary(trial: Any) -> dict[str, Any]:
    return {
        "number": trial.number,
        "values": list(trial.values),
        "shape": trial.user_attrs.get("shape"),
        "predicted_latency_ms": trial.user_attrs.get("predicted_latency_ms"),
        "memory_mb": trial.user_attrs.get("memory_mb"),
    }


def _progress(total: int, done: int, enabled: bool) -> Any:
    return bar(total, "search", "trial", initial=done, enabled=enabled)
