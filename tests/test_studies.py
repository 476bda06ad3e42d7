"""Study files (studies/*.yaml), ``search --config`` and ``anyshape batch``: checked, resumable, one summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from nas.cli import main
from nas.errors import AnyshapeError
from nas.search.storage import load_study
from nas.search.studies import load_study_file, run_batch
from profilers.environment import cpu_slug

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))
POSTGRES_URL = os.environ.get("ANYSHAPE_TEST_POSTGRES_URL")


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_committed_study_files_are_headed_by_their_command_and_valid(path):
    study = load_study_file(path)
    assert study.command == f"anyshape search --config studies/{path.name}"
    cfg = study.config
    table = REPO / "latency_tables" / cfg.device / cfg.runtime / "minilm.csv"
    assert table.is_file(), f"{path.name}: no {cfg.runtime} table for {cfg.device}"
    assert cfg.latency_budget_ms and cfg.trials >= 50
    assert Path(cfg.factory_args["supernet"]) == REPO / "nas" / "assets" / "minilm-supernet"


def test_at_least_four_committed_study_files():
    assert len(STUDIES) >= 4


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("- a\n- b\n", "must be a mapping"),
        ("supernet: x\ndevice: d\nruntime: torch\n", "lacks trials"),
        ("supernet: x\ndevice: d\nruntime: torch\ntrials: 5\nsurprise: 1\n", "unknown keys ['surprise']"),
        ("supernet: x\ndevice: d\nruntime: torch\ntrials: many\n", "trials is 'many', not an integer"),
        ("supernet: nowhere\ndevice: cpu-x-2c\nruntime: torch\ntrials: 5\n", "no supernet directory"),
        ("factory: nas.search.testing:fake_problem\nsupernet: x\ndevice: cpu-x-2c\nruntime: torch\ntrials: 5\n", "custom factory"),
        ("supernet: [unclosed\n", "not readable YAML"),
    ],
)
def test_bad_study_files_are_one_line_errors(tmp_path, body, needle):
    with pytest.raises(AnyshapeError, match=None) as e:
        load_study_file(write(tmp_path / "s.yaml", body))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_study_file(tmp_path):
    assert main(["search", "--config", str(tmp_path / "none.yaml")]) == 1
    assert main(["batch", str(tmp_path / "none.yaml")]) == 1


@pytest.fixture(scope="module")
def tiny(tok_model, tmp_path_factory, search_setup):
    root = tmp_path_factory.mktemp("studies")
    search_setup(tok_model("llama"), root, "tiny-llama", 128)
    return root


def test_search_config_runs_a_real_supernet_study_and_refuses_clashing_flags(tiny, capsys):
    path = write(tiny / "s.yaml", f"# anyshape search --config s.yaml\nsupernet: sn\ndevice: {cpu_slug()}\nruntime: fake\n"
                                  "tables: tables\ntable: tiny-llama\ntrials: 8\nlatency_budget_ms: 1000\n")
    url = f"sqlite:///{tiny / 'study.db'}"
    assert main(["search", "--config", str(path), "--storage", url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["study"] == "s" and result["complete_trials"] == 8
    assert Path(load_study(url, "s").user_attrs["search_config"]["factory_args"]["supernet"]) == tiny / "sn"
    assert main(["search", "--config", str(path), "--trials", "9"]) == 1
    assert "drop --trials" in capsys.readouterr().err


def fake_study(folder: Path, name: str, trials: int, delay_s: float, budget: float) -> Path:
    return write(folder / f"{name}.yaml", f"# anyshape search --config {name}.yaml\nfactory: nas.search.testing:fake_problem\n"
                                          f"factory_args: {{delay_s: {delay_s}}}\ndevice: {cpu_slug()}\nruntime: torch\n"
                                          f"trials: {trials}\nlatency_budget_ms: {budget}\nseed: {len(name)}\n")


def test_batch_runs_every_file_and_prints_one_table(tmp_path, capsys):
    files = [fake_study(tmp_path, f"b{i}", 12, 0.0, 2.0 + i) for i in range(3)]
    assert main(["batch", *map(str, files), "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert all(f"b{i} " in out for i in range(3)) and "3 studies" in out and "3 complete, 0 failed" in out
    rows = run_batch(files, workers=1, progress=False)  # a second run resumes: nothing left to do
    assert [r.new_trials for r in rows] == [0, 0, 0] and all(r.pareto > 0 for r in rows)


def test_batch_reports_a_failing_study_and_finishes_the_others(tmp_path, capsys):
    good = fake_study(tmp_path, "good", 6, 0.0, 3.0)
    bad = write(tmp_path / "bad.yaml", f"factory: nas.search.testing:no_such_problem\ndevice: {cpu_slug()}\nruntime: torch\ntrials: 3\n")
    assert main(["batch", str(good), str(bad), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "good" in out and "error:" in out and "1 complete, 1 failed" in out


def count_complete(url: str, names: list[str]) -> int:
    try:
        store = optuna.storages.RDBStorage(url)
        done = 0
        for s in optuna.get_all_study_summaries(store):
            if s.study_name in names:
                done += len(store.get_all_trials(s._study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        return done
    except Exception:  # the schema may not exist yet
        return 0


@pytest.mark.skipif(POSTGRES_URL is None, reason="set ANYSHAPE_TEST_POSTGRES_URL (CI does) to run the PostgreSQL batch test")
def test_batch_on_postgres_killed_with_sigkill_and_restarted_loses_and_repeats_nothing(tmp_path):
    tag = uuid.uuid4().hex[:8]
    names = [f"kill-{tag}-{i}" for i in range(4)]
    trials = 30
    files = [fake_study(tmp_path, n, trials, 0.1, 2.5) for n in names]
    cmd = [sys.executable, "-m", "nas", "batch", *map(str, files), "--workers", "2", "--storage", POSTGRES_URL, "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and count_complete(POSTGRES_URL, names) < 15:
        time.sleep(0.5)
    assert proc.poll() is None, "the batch ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and both of its workers
    proc.wait()
    kept = {}
    started = {s.study_name for s in optuna.get_all_study_summaries(POSTGRES_URL)}
    for n in sorted(started & set(names)):  # the studies the killed batch had begun
        for t in load_study(POSTGRES_URL, n).get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            kept[(n, t.number)] = t.values
    assert 15 <= len(kept) < 4 * trials
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    wall = time.perf_counter() - start
    for n in names:
        study = load_study(POSTGRES_URL, n)
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(done) == trials, (n, len(done))  # none lost, none run twice over the target
        assert len({t.number for t in done}) == trials
        for t in done:
            if (n, t.number) in kept:
                assert t.values == kept[(n, t.number)]  # a finished trial is never changed
    assert "4 studies" in again.stdout and "4 complete, 0 failed" in again.stdout
    print(f"batch of 4 study files x {trials} trials on 2 workers, killed and restarted: {wall:.1f} s wall")
