"""Search and export on a synthetic problem (no model): fronts, budgets, resume, workers, seeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import yaml

from nas.config import SubnetConfig
from nas.errors import AnyshapeError
from nas.search import SearchConfig, export_study, run_search
from nas.search.problem import SearchSpace, memory_mb
from nas.search.storage import load_study
from nas.search.testing import SPACE
from nas.shape import Shape
from nas.workload import Workload

FAKE = "nas.search.testing:fake_problem"
POSTGRES_URL = os.environ.get("ANYSHAPE_TEST_POSTGRES_URL")


def config(tmp_path, **kwargs):
    base = dict(study="s", trials=30, factory=FAKE, studies_dir=str(tmp_path), seed=3)
    base.update(kwargs)
    return SearchConfig(**base)


def complete(study):
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def dominates(a, b):
    """a dominates b: accuracy >= and latency <=, one strictly (accuracy maximised)."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def test_exported_configs_are_feasible_and_non_dominated(tmp_path):
    cfg = config(tmp_path, trials=40, latency_budget_ms=3.0)
    result = run_search(cfg, progress=False)
    assert result.complete_trials == 40
    exported = export_study(cfg.storage_url, "s", tmp_path / "out")
    study = load_study(cfg.storage_url, "s")
    trials = complete(study)
    feasible = [t for t in trials if t.user_attrs["predicted_latency_ms"] <= 3.0]
    assert len(feasible) < len(trials), "the budget should exclude some trials for this test to mean anything"
    shapes = set()
    for path in exported.configs:
        sub = SubnetConfig.load(path)
        latency = next(iter(sub.objectives["latency"].values()))["predicted_ms"]
        point = (sub.objectives["accuracy"]["value"], latency)
        assert latency <= 3.0
        assert not any(dominates((t.values[0], t.values[1]), point) for t in feasible)
        assert sub.supernet is not None and sub.base_model.source == "fake-model"
        shapes.add((*(sub.shape.layers or ()), sub.shape.heads, sub.shape.kv_heads, sub.shape.ffn))
    assert len(shapes) == len(exported.configs)  # one config per shape
    assert exported.csv.read_text().count("\n") == len(exported.configs) + 1
    assert all(p.stat().st_size > 1000 for p in exported.plots)


def test_trials_record_what_the_dashboard_shows(tmp_path):
    cfg = config(tmp_path, trials=5)
    run_search(cfg, progress=False)
    study = load_study(cfg.storage_url, "s")
    assert study.metric_names == ["fake_score", "latency_ms"]
    trial = complete(study)[0]
    assert {"shape", "predicted_latency_ms", "latency_source", "supernet_sha256", "memory_mb"} <= set(trial.user_attrs)
    assert study.user_attrs["search_config"]["workload"] == "prefill:b1:s128"
    assert len(study.user_attrs["baselines"]) == SPACE.num_layers * 3


def test_same_seed_same_front(tmp_path):
    fronts = []
    for name in ("a", "b"):
        cfg = config(tmp_path, study=name, trials=30, seed=11)
        fronts.append([(p["shape"], p["values"]) for p in run_search(cfg, progress=False).pareto])
    assert fronts[0] == fronts[1]
    other = run_search(config(tmp_path, study="c", trials=30, seed=12), progress=False).pareto
    assert [(p["shape"], p["values"]) for p in other] != fronts[0]


def test_rerun_continues_to_the_trial_count(tmp_path):
    first = run_search(config(tmp_path, trials=10), progress=False)
    second = run_search(config(tmp_path, trials=25), progress=False)
    assert (first.new_trials, second.new_trials, second.complete_trials) == (10, 15, 25)
    again = run_search(config(tmp_path, trials=25), progress=False)
    assert again.new_trials == 0


def test_tpe_sampler_and_memory_objective(tmp_path):
    cfg = config(tmp_path, trials=12, sampler="tpe", memory_objective=True, memory_budget_mb=1.5)
    result = run_search(cfg, progress=False)
    assert result.complete_trials == 12 and all(len(p["values"]) == 3 for p in result.pareto)
    assert all(p["memory_mb"] <= 1.5 for p in result.pareto)


def test_budget_no_shape_meets_is_a_clear_export_error(tmp_path):
    cfg = config(tmp_path, trials=8, latency_budget_ms=0.01)
    run_search(cfg, progress=False)
    with pytest.raises(AnyshapeError, match="no shape met the budgets"):
        export_study(cfg.storage_url, "s", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_study_made_with_another_config_is_refused(tmp_path):
    run_search(config(tmp_path, trials=3), progress=False)
    with pytest.raises(AnyshapeError, match="different latency_budget_ms"):
        run_search(config(tmp_path, trials=3, latency_budget_ms=5.0), progress=False)


@pytest.mark.parametrize(
    ("storage", "message"),
    [("not a url", "not a database URL"), ("nosuchdb://x/y", "cannot open study storage")],
)
def test_bad_storage_urls(tmp_path, storage, message):
    with pytest.raises(AnyshapeError, match=message):
        run_search(config(tmp_path, storage=storage), progress=False)


def test_unknown_study_lists_known_ones(tmp_path):
    cfg = config(tmp_path, trials=2)
    run_search(cfg, progress=False)
    with pytest.raises(AnyshapeError, match=r"no study 'nope'.*studies there: s"):
        export_study(cfg.storage_url, "nope", tmp_path / "o")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"trials": 0}, "--trials"), ({"workers": 0}, "--workers"), ({"study": "a/b"}, "plain name"), ({"latency_budget_ms": -1.0}, "positive")],
)
def test_bad_search_configs(tmp_path, kwargs, message):
    with pytest.raises(AnyshapeError, match=message):
        config(tmp_path, **kwargs)


def test_workers_on_sqlite(tmp_path):
    cfg = config(tmp_path, trials=24, workers=2)
    result = run_search(cfg, progress=False)
    study = load_study(cfg.storage_url, "s")
    numbers = [t.number for t in complete(study)]
    assert result.complete_trials == 24 and len(numbers) == len(set(numbers)) == 24


OPEN_STORAGE = """
import sys, time
from nas.search.storage import make_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
make_storage(sys.argv[1], heartbeat=False)
"""


def test_processes_opening_one_new_sqlite_file_at_once_all_succeed(tmp_path):
    # Two service workers once opened a new study file together; one failed with
    # "UNIQUE constraint failed: alembic_version.version_num". Each round starts 6 processes on
    # a fresh file at the same instant (without the lock, about half the rounds failed here).
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / str(round_) / 'study.db'}"
        start = time.time() + 5.0  # past the imports of every process
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORAGE, url, str(start)], stderr=subprocess.PIPE, text=True) for _ in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)


@pytest.mark.parametrize(
    "message",
    [
        '(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num',
        '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "pg_type_typname_nsp_index"',
        '(sqlite3.OperationalError) table studies already exists',
    ],
)
def test_schema_races_are_retried_and_other_errors_are_not(message):
    from nas.search.storage import _lost_schema_race

    assert _lost_schema_race(Exception(message))
    assert not _lost_schema_race(Exception("(psycopg2.OperationalError) connection refused"))


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="set ANYSHAPE_TEST_POSTGRES_URL to run PostgreSQL tests")
def test_workers_on_postgres_lose_and_duplicate_nothing(tmp_path):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path, study=name, trials=30, workers=3, storage=POSTGRES_URL, factory_args={"delay_s": 0.02})
    result = run_search(cfg, progress=False)
    study = load_study(POSTGRES_URL, name)
    trials = complete(study)
    assert result.complete_trials == 30 and len(trials) == 30
    assert len({t.number for t in trials}) == 30
    assert all("shape" in t.user_attrs and t.values is not None for t in trials)
    assert not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL))
    optuna.delete_study(study_name=name, storage=POSTGRES_URL)


RUNNER = """
import sys
from nas.search import SearchConfig, run_search
cfg = SearchConfig(study="k", trials=int(sys.argv[2]), factory="nas.search.testing:fake_problem",
                   studies_dir=sys.argv[1], seed=5, factory_args={"delay_s": float(sys.argv[3])})
run_search(cfg, progress=False)
"""


def count_complete_readonly(db) -> int:
    """Finished trials, read without creating anything (a reader that opened an Optuna storage
    while the child was still creating its schema could make the child fail)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_killed_search_resumes_keeping_finished_trials(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), "40", "0.15"], env=env)
    cfg = config(tmp_path, study="k", trials=40, seed=5, factory_args={"delay_s": 0.15})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and count_complete_readonly(tmp_path / "k" / "study.db") < 6:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = complete(load_study(cfg.storage_url, "k"))
    assert 6 <= len(finished) < 40
    kept = {t.number: t.values for t in finished}
    result = run_search(cfg, progress=False)
    study = load_study(cfg.storage_url, "k")
    assert result.complete_trials == 40
    after = {t.number: t.values for t in complete(study)}
    assert all(after[n] == v for n, v in kept.items())  # nothing finished was lost or changed


def test_search_space_and_memory():
    space = SearchSpace.from_space(SPACE, min_depth=2)
    assert space.min_depth == 2 and space.max_depth == 8 and space.size == 7 * len(SPACE.head_choices()) * 8
    with pytest.raises(AnyshapeError, match="min_depth"):
        SearchSpace(9, 8, ((8, 4),), (512,))
    small = Shape(layers=(0,), heads=2, kv_heads=1, ffn=64)
    big = SPACE.full_shape()
    wl = Workload("decode", 1, 128)
    assert memory_mb(SPACE, small, wl, 1000) < memory_mb(SPACE, big, wl, 1000)
    # KV cache grows with the context
    assert memory_mb(SPACE, big, Workload("decode", 1, 4096), 1000) > memory_mb(SPACE, big, wl, 1000)


def test_export_configs_are_valid_yaml_for_extract(tmp_path):
    cfg = config(tmp_path, trials=10)
    run_search(cfg, progress=False)
    exported = export_study(cfg.storage_url, "s", tmp_path / "out")
    data = yaml.safe_load(exported.configs[0].read_text())
    assert data["format"] == "anyshape/subnet-v1" and "layers" in data["shape"]
