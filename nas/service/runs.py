"""The run queue: a ``anyshape_runs`` table in any SQLAlchemy database, and the worker processes.

A run is one search config (``SearchConfig`` as JSON). Its life:

    queued ──claim (compare-and-set on status)──▶ running ──▶ done | failed
       ▲                                             │
       └── requeue_stale: the worker stopped heartbeating (or its pid is gone on this host)

Nothing lives in memory: a restarted service finds every queued run in the table, and every
finished trial in the study storage; a re-queued run calls ``run_search`` again, which continues
the study (Optuna's own heartbeats fail and retry the trial the dead worker was in).
After ``max_attempts`` claims a run whose worker keeps dying is marked failed with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.errors import AnyshapeError

STATUSES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Run:
    id: str
    study: str
    status: str
    config: dict[str, Any]
    trials: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker_host: str | None
    worker_pid: int | None
    attempts: int
    error: str | None
    result: dict[str, Any] | None


def worker_id() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # a zombie (killed, not yet reaped) is dead for our purposes
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
        if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


class RunStore:
    """The runs table; every state change is one compare-and-set UPDATE, safe across processes and hosts."""

    def __init__(self, url: str, *, table: str = "anyshape_runs"):
        import sqlalchemy as sa

        from nas.search.storage import parse_db_url

        parsed = parse_db_url(url, "--db", "sqlite:///studies/service.db")
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.url = parsed.render_as_string(hide_password=True)
        self.engine = sa.create_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta = sa.MetaData()
        self.table = sa.Table(
            table,
            meta,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("study", sa.String(128), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False, index=True),
            sa.Column("config", sa.Text, nullable=False),
            sa.Column("trials", sa.Integer, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("started_at", sa.Float),
            sa.Column("finished_at", sa.Float),
            sa.Column("heartbeat_at", sa.Float),
            sa.Column("worker_host", sa.String(255)),
            sa.Column("worker_pid", sa.Integer),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("error", sa.Text),
            sa.Column("result", sa.Text),
        )
        try:
            meta.create_all(self.engine)
        except Exception as e:  # driver missing, host unreachable
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AnyshapeError(f"cannot open the runs database {self.url}: {first}") from None

    # -- reads ---------------------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(self.table.select().where(self.table.c.id == run_id)).mappings().first()
        return None if row is None else _run(row)

    def find(self, *, status: str | None = None, limit: int = 1000) -> list[Run]:
        query = self.table.select().order_by(self.table.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(self.table.c.status == status)
        with self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query).mappings()]

    def count_active(self, study: str | None = None) -> int:
        import sqlalchemy as sa

        query = sa.select(sa.func.count()).select_from(self.table).where(self.table.c.status.in_(ACTIVE))
        if study is not None:
            query = query.where(self.table.c.study == study)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- writes --------------------------------------------------------------------------------

    def submit(self, config: Mapping[str, Any]) -> Run:
        now = time.time()
        run_id = uuid.uuid4().hex
        values = dict(
            id=run_id, study=str(config["study"]), status="queued", config=json.dumps(dict(config), sort_keys=True),
            trials=int(config["trials"]), created_at=now, updated_at=now, attempts=0,
        )
        with self.engine.begin() as conn:
            conn.execute(self.table.insert().values(**values))
        run = self.get(run_id)
        assert run is not None
        return run

    def claim(self, host: str, pid: int) -> Run | None:
        """Take the oldest queued run; another worker that took it first makes the UPDATE match no row."""
        for _ in range(20):  # bounded: each miss means another worker claimed that run
            with self.engine.connect() as conn:
                row = conn.execute(
                    self.table.select().with_only_columns(self.table.c.id).where(self.table.c.status == "queued")
                    .order_by(self.table.c.created_at).limit(1)
                ).first()
            if row is None:
                return None
            now = time.time()
            if self._cas(row.id, ("queued",), status="running", worker_host=host, worker_pid=pid, heartbeat_at=now,
                         started_at=now, attempts=self.table.c.attempts + 1, error=None):
                return self.get(row.id)
        return None

    def heartbeat(self, run_id: str, host: str, pid: int) -> bool:
        """False when this worker no longer owns the run (it was re-queued or finished)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                self.table.update()
                .where(self.table.c.id == run_id, self.table.c.status == "running",
                       self.table.c.worker_host == host, self.table.c.worker_pid == pid)
                .values(heartbeat_at=time.time(), updated_at=time.time())
            )
        return bool(result.rowcount)

    def finish(self, run_id: str, host: str, pid: int, result: Mapping[str, Any]) -> bool:
        return self._owned_cas(run_id, host, pid, status="done", finished_at=time.time(), result=json.dumps(dict(result)))

    def fail(self, run_id: str, host: str, pid: int, error: str) -> bool:
        return self._owned_cas(run_id, host, pid, status="failed", finished_at=time.time(), error=error[:4000])

    def release(self, run_id: str, host: str, pid: int, reason: str) -> bool:
        """Put a run this worker owns back in the queue (the service is stopping)."""
        return self._owned_cas(run_id, host, pid, status="queued", worker_pid=None, heartbeat_at=None, error=reason)

    def requeue_stale(self, stale_after_s: float, max_attempts: int) -> list[tuple[str, str]]:
        """Re-queue (or, past ``max_attempts``, fail) running runs whose worker is gone.

        Gone: no heartbeat for ``stale_after_s``, or on this host a worker pid that is not alive.
        Returns (run id, what happened) pairs.
        """
        host = socket.gethostname()
        now = time.time()
        out = []
        for run in self.find(status="running"):
            beat = run.heartbeat_at or run.started_at or run.updated_at
            dead_pid = run.worker_host == host and run.worker_pid is not None and not pid_alive(run.worker_pid)
            if not dead_pid and now - beat < stale_after_s:
                continue
            why = (f"worker pid {run.worker_pid} on {run.worker_host} is gone" if dead_pid
                   else f"worker pid {run.worker_pid} on {run.worker_host} sent no heartbeat for {now - beat:.0f} s")
            where = [self.table.c.worker_pid == run.worker_pid, self.table.c.heartbeat_at == run.heartbeat_at]
            if run.attempts >= max_attempts:
                if self._cas(run.id, ("running",), *where, status="failed", finished_at=now,
                             error=f"{why}; gave up after {run.attempts} attempts"):
                    out.append((run.id, "failed"))
            elif self._cas(run.id, ("running",), *where, status="queued", worker_pid=None, heartbeat_at=None,
                           error=f"{why}; re-queued (attempt {run.attempts} of {max_attempts})"):
                out.append((run.id, "requeued"))
        return out

    def _owned_cas(self, run_id: str, host: str, pid: int, **values: Any) -> bool:
        return self._cas(run_id, ("running",), self.table.c.worker_host == host, self.table.c.worker_pid == pid, **values)

    def _cas(self, run_id: str, from_status: tuple[str, ...], *where: Any, **values: Any) -> bool:
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            result = conn.execute(
                self.table.update().where(self.table.c.id == run_id, self.table.c.status.in_(from_status), *where).values(**values)
            )
        return bool(result.rowcount)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _run(row: Any) -> Run:
    data = dict(row)
    data["config"] = json.loads(data["config"])
    data["result"] = json.loads(data["result"]) if data.get("result") else None
    return Run(**data)


# -- workers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs (picklable, for the spawn start method)."""

    db_url: str
    studies_dir: str
    search_storage: str | None
    heartbeat_s: float
    stale_after_s: float
    max_attempts: int
    poll_s: float = 1.0


def search_config(config: Mapping[str, Any], settings: WorkerSettings) -> Any:
    """The ``SearchConfig`` of a stored run config (validated again: the table may be old).

    The run's ``calibrated`` goes to the factory as ``factory_args["calibrated"]``; a run queued before
    the field existed has none, and its factory keeps the table's predictions (as its study did)."""
    from nas.search.run import SearchConfig
    from nas.workload import Workload

    data = dict(config)
    data["workload"] = Workload.parse(str(data.get("workload", "prefill:b1:s128")))
    calibrated = data.pop("calibrated", None)
    if calibrated is not None:
        data["factory_args"] = {**dict(data.get("factory_args") or {}), "calibrated": bool(calibrated)}
    return SearchConfig(**data, storage=settings.search_storage, studies_dir=settings.studies_dir)


def execute(store: RunStore, run: Run, settings: WorkerSettings, host: str, pid: int) -> str:
    """Run one claimed run to done or failed, heartbeating from a thread meanwhile; returns the status."""
    from nas.search.run import run_search

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.heartbeat_s):  # ends when the run ends
            with contextlib.suppress(Exception):  # a missed beat is retried; staleness needs many
                store.heartbeat(run.id, host, pid)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run.id[:8]}", daemon=True)
    thread.start()
    try:
        result = run_search(search_config(run.config, settings), progress=False)
    except AnyshapeError as e:
        store.fail(run.id, host, pid, str(e))
        return "failed"
    except Exception as e:
        store.fail(run.id, host, pid, f"{type(e).__name__}: {e}")
        return "failed"
    finally:
        stop.set()
        thread.join(timeout=settings.heartbeat_s + 5)
    store.finish(run.id, host, pid, {
        "complete_trials": result.complete_trials, "new_trials": result.new_trials,
        "seconds": round(result.seconds, 3), "trials_per_minute": round(result.trials_per_minute, 2),
        "storage": _hide_password(result.storage),
        "latency_calibrated": result.calibrated, "latency_calibration_id": (result.calibration or {}).get("id"),
    })
    return "done"


def worker_main(settings: WorkerSettings, stop: Any, parent_pid: int) -> None:
    """A worker process: claim, run, repeat, until ``stop`` is set or the service process is gone."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not logging.getLogger().handlers:  # a spawned process starts unconfigured: say what it claims on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("anyshape.service.worker")
    store = RunStore(settings.db_url)
    host, pid = worker_id()
    log.info("worker %d: started", pid)
    try:
        while not stop.is_set() and os.getppid() == parent_pid:  # ends with the service
            store.requeue_stale(settings.stale_after_s, settings.max_attempts)
            run = store.claim(host, pid)
            if run is None:
                stop.wait(settings.poll_s)
                continue
            log.info("worker %d: run %s (study %s)", pid, run.id, run.study)
            status = execute(store, run, settings, host, pid)
            log.info("worker %d: run %s %s", pid, run.id, status)
    finally:
        store.dispose()


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


class WorkerPool:
    """``n`` worker processes (spawn) that the service supervises: dead ones are replaced (bounded)."""

    def __init__(self, settings: WorkerSettings, n: int, *, max_restarts: int = 100):
        import multiprocessing

        self.settings = settings
        self.n = n
        self.restarts_left = max_restarts
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self.procs: list[Any] = []

    def start(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.n)]

    def _spawn(self, i: int) -> Any:
        proc = self._ctx.Process(target=worker_main, args=(self.settings, self._stop, os.getpid()),
                                 name=f"anyshape-worker-{i}")  # not daemonic: a run may start its own search processes
        proc.start()
        return proc

    def check(self, store: RunStore) -> list[tuple[str, str]]:
        """Re-queue runs of dead workers and replace dead workers; returns what was re-queued or failed."""
        changed = store.requeue_stale(self.settings.stale_after_s, self.settings.max_attempts)
        for i, proc in enumerate(self.procs):
            if not proc.is_alive() and not self._stop.is_set() and self.restarts_left > 0:
                proc.join(timeout=0)
                self.restarts_left -= 1
                self.procs[i] = self._spawn(i)
        return changed

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def stop(self, store: RunStore) -> None:
        """Stop the workers; a run still in progress goes back to the queue (its trials stay in the study)."""
        self._stop.set()
        host = socket.gethostname()
        for proc in self.procs:
            proc.join(timeout=2)
        for proc in self.procs:
            if proc.is_alive():  # busy in a search
                proc.terminate()
                proc.join(timeout=10)
        pids = {p.pid for p in self.procs}
        for run in store.find(status="running"):
            if run.worker_host == host and run.worker_pid in pids and run.worker_pid is not None:
                store.release(run.id, host, run.worker_pid, "the service stopped during the run; re-queued")
