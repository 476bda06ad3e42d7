"""Budgets as every Optuna tool sees them: system_attrs["constraints"], study.best_trials, optuna-dashboard over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

from nas.search import SearchConfig, run_search
from nas.search.storage import load_study, pareto_trials

pytest.importorskip("optuna_dashboard")

BUDGET = 3.0


@pytest.fixture(scope="module")
def budget_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    cfg = SearchConfig(study="s", trials=40, factory="nas.search.testing:fake_problem", studies_dir=str(tmp), seed=3,
                       latency_budget_ms=BUDGET)
    run_search(cfg, progress=False)
    return cfg.storage_url


def feasible_front(study) -> set[int]:
    """Non-dominated numbers among feasible trials, computed here from the slack attribute alone."""
    done = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if t.user_attrs["latency_slack_ms"] <= 0]
    return {t.number for t in done if not any(
        (o.values[0] >= t.values[0] and o.values[1] <= t.values[1]) and tuple(o.values) != tuple(t.values) for o in done)}


def test_budget_is_recorded_where_optuna_tools_read_it(budget_study):
    study = load_study(budget_study, "s")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    infeasible = [t for t in trials if not t.user_attrs["feasible"]]
    assert infeasible and len(infeasible) < len(trials), "the budget should exclude some trials for this test to mean anything"
    for t in trials:
        slack = t.user_attrs["latency_slack_ms"]
        assert slack == pytest.approx(t.user_attrs["predicted_latency_ms"] - BUDGET, abs=1e-5)
        assert t.user_attrs["feasible"] == (slack <= 0)
        assert t.system_attrs["constraints"] == [pytest.approx(slack, abs=1e-5)]  # the list optuna-dashboard reads
        assert t.system_attrs["constraints:latency_budget_ms"] == pytest.approx(slack, abs=1e-5)  # Optuna 5's own
    assert {t.number for t in study.best_trials} == feasible_front(study)
    assert all(t.user_attrs["feasible"] for t in pareto_trials(study))


def wsgi_get(app, path: str) -> dict:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), (status, body[:200])
    return json.loads(body)


def test_plain_dashboard_sees_the_constraints(budget_study):
    """Unwrapped optuna-dashboard reads every trial's constraints (its Pareto plot greys infeasible
    trials), yet lists infeasible trials among its best: why ``anyshape dashboard`` exists."""
    import optuna_dashboard

    from nas.search.storage import load_storage

    app = optuna_dashboard.wsgi(load_storage(budget_study))
    (summary,) = wsgi_get(app, "/api/studies")["study_summaries"]
    detail = wsgi_get(app, f"/api/studies/{summary['study_id']}")
    assert all(len(t["constraints"]) == 1 for t in detail["trials"] if t["state"] == "Complete")
    if not getattr(optuna_dashboard._app.get_pareto_front_trials, "anyshape_feasible", False):
        assert any(t["constraints"][0] > 0 for t in detail["best_trials"]), "the plain dashboard now filters: drop the wrapper"


def test_anyshape_dashboard_lists_only_the_feasible_front_over_http(budget_study):
    proc = subprocess.Popen([sys.executable, "-m", "nas", "dashboard", "--storage", budget_study, "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "optuna-dashboard on http://" in line, line
        url = line.split(" on ", 1)[1].split()[0]

        def get(path: str) -> dict:
            for _ in range(50):
                try:
                    with urllib.request.urlopen(url + path, timeout=10) as r:
                        return json.loads(r.read())
                except ConnectionError:
                    time.sleep(0.1)
            raise AssertionError(f"{url} did not answer")

        (summary,) = get("/api/studies")["study_summaries"]
        detail = get(f"/api/studies/{summary['study_id']}")
        best = detail["best_trials"]
        assert best and all(t["constraints"][0] <= 0 for t in best)
        assert {t["number"] for t in best} == feasible_front(load_study(budget_study, "s"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_command_errors_are_one_line(tmp_path):
    from nas.cli import main

    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0"]) == 1
    assert main(["dashboard"]) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dashboard_reads_the_study(tmp_path):
    cfg = SearchConfig(study="dash", trials=6, factory="nas.search.testing:fake_problem", studies_dir=str(tmp_path))
    run_search(cfg, progress=False)
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), cfg.storage_url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 60
        studies = None
        while time.time() < deadline and studies is None:
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer within 60 s"
        (study,) = [s for s in studies if s["study_name"] == "dash"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0")
        trials = detail["trials"]
        assert len(trials) == 6
        attrs = {a["key"] for a in trials[0]["user_attrs"]}
        assert {"shape", "predicted_latency_ms", "latency_source", "supernet_sha256"} <= attrs
        assert detail["objective_names"] == ["fake_score", "latency_ms"] and len(detail["best_trials"]) >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_plots_show_budget_feasibility_step_front_and_hover(budget_study, tmp_path):
    import re

    from nas.search import export_study

    exported = export_study(budget_study, "s", tmp_path / "out")
    png, page = exported.plots
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    text = page.read_text()
    assert "Plotly.newPlot" in text and "<script src=" not in text and len(text) > 1_000_000  # plotly.js inline: works offline
    assert "infeasible trials (over a budget)" in text and f"budget {BUDGET:g} ms" in text and '"shape":"hv"' in text
    for path in exported.configs:  # every exported config is named in some point's hover
        assert path.name in text
    assert re.search(r"over budget: latency_budget_ms \+[0-9.]+", text)


def test_plot_front_is_a_step_and_html_falls_back_without_plotly(budget_study, tmp_path, monkeypatch):
    from nas.search.export import PlotData, write_plots

    study = load_study(budget_study, "s")
    front = pareto_trials(study)
    data = PlotData.of(study, front, "fake_score", {})
    xs, ys = data.step()
    assert len(xs) == 2 * len(front) - 1 and xs == sorted(xs)
    assert all(ys[2 * i + 1] == ys[2 * i] for i in range(len(front) - 1))  # horizontal first, then the next shape's value
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    tmp_path.mkdir(exist_ok=True)
    _, page = write_plots(study, front, tmp_path, "fake_score")
    assert "<svg" in page.read_text() and "pip install 'anyshape[dashboard]'" in page.read_text()
