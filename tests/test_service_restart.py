"""The service as a process (`anyshape serve`): a restart keeps queued runs and finished trials;
a worker killed with SIGKILL mid-run is detected and its run finishes after a restart, losing no trial."""

from __future__ import annotations

import os
import signal
import uuid

import httpx
import optuna
import pytest
from test_service_support import TOKEN, auth, run_body, server_process, wait_until

from nas.search.storage import load_study
from nas.service.runs import RunStore

POSTGRES_URL = os.environ.get("ANYSHAPE_TEST_POSTGRES_URL")


def complete(storage: str, name: str) -> dict[int, list[float]]:
    try:
        study = load_study(storage, name)
    except Exception:
        return {}
    return {t.number: list(t.values) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}


def status(url: str, run_id: str) -> dict:
    return httpx.get(f"{url}/runs/{run_id}", timeout=30).json()


def finished(url: str, run_id: str) -> dict | None:
    s = status(url, run_id)
    return s if s["status"] in ("done", "failed") else None


@pytest.mark.slow
def test_restart_keeps_queued_runs_and_they_run_after(tmp_path):
    db = f"sqlite:///{tmp_path / 'service.db'}"
    with server_process(tmp_path, db, workers=0) as (url, _):
        ids = [httpx.post(f"{url}/runs", json=run_body(f"r{i}", 6), headers=auth()).json()["id"] for i in range(2)]
        assert [status(url, i)["status"] for i in ids] == ["queued", "queued"]
    with server_process(tmp_path, db, workers=1) as (url, _):  # a new process: state came from the database
        listed = {r["id"]: r for r in httpx.get(f"{url}/runs").json()}
        assert set(ids) <= set(listed)
        for run_id in ids:
            done = wait_until(lambda run_id=run_id: finished(url, run_id), 180, "queued runs to finish after the restart")
            assert done["status"] == "done" and done["complete_trials"] == 6, done
        studies = {s["name"] for s in httpx.get(f"{url}/studies").json()}
        assert {"r0", "r1"} <= studies


@pytest.mark.slow
def test_worker_killed_mid_run_resumes_after_restart_losing_no_trial(tmp_path):
    db = f"sqlite:///{tmp_path / 'service.db'}"
    storage = f"sqlite:///{tmp_path / 'k' / 'study.db'}"
    with server_process(tmp_path, db, workers=1) as (url, _):
        run = httpx.post(f"{url}/runs", json=run_body("k", 40, factory_args={"delay_s": 0.3}, seed=5), headers=auth()).json()
        kept = wait_until(lambda: (lambda c: c if len(c) >= 6 else None)(complete(storage, "k")), 180, "6 finished trials")
        running = status(url, run["id"])
        assert running["status"] == "running" and running["worker_pid"]
        os.kill(running["worker_pid"], signal.SIGKILL)
        kept = complete(storage, "k")  # everything finished before the kill
        assert 6 <= len(kept) < 40
    # the service stopped (gracefully) with the run still marked running by a dead worker
    assert RunStore(db).get(run["id"]).status in ("running", "queued")
    with server_process(tmp_path, db, workers=1) as (url, _):
        done = wait_until(lambda: finished(url, run["id"]), 300, "the run to finish after the restart")
        assert done["status"] == "done", done
        assert done["attempts"] >= 2  # claimed again after the kill
    after = complete(storage, "k")
    assert len(after) >= 40
    assert all(after[n] == v for n, v in kept.items())  # nothing finished was lost or changed


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="set ANYSHAPE_TEST_POSTGRES_URL to run PostgreSQL tests")
def test_run_queue_on_postgres(tmp_path):
    import sqlalchemy as sa

    assert POSTGRES_URL is not None
    table = f"runs_{uuid.uuid4().hex[:8]}"
    store = RunStore(POSTGRES_URL, table=table)
    try:
        ids = {store.submit({"study": f"s{i}", "trials": 1}).id for i in range(10)}
        other = RunStore(POSTGRES_URL, table=table)
        claimed = [r.id for r in iter(lambda: store.claim("h", 1) or other.claim("h", 2), None)]
        assert sorted(claimed) == sorted(ids)
        assert store.count_active() == 10
        run = store.find(status="running")[0]
        assert store.finish(run.id, run.worker_host or "", run.worker_pid or 0, {"ok": True})
        assert store.get(run.id).status == "done" and store.get(run.id).result == {"ok": True}
        assert not store.finish(run.id, "h", 1, {})  # a finished run cannot be finished again
    finally:
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        store.dispose()


def test_token_is_needed_by_the_process(tmp_path):
    db = f"sqlite:///{tmp_path / 'service.db'}"
    with server_process(tmp_path, db, workers=0) as (url, _):
        assert httpx.post(f"{url}/runs", json=run_body("x", 2)).status_code == 401
        assert httpx.post(f"{url}/runs", json=run_body("x", 2), headers=auth(TOKEN[::-1])).status_code == 401
        assert httpx.post(f"{url}/runs", json=run_body("x", 2), headers=auth()).status_code == 202
