"""Study storage: database URLs, Optuna RDB storages (SQLite in WAL mode, PostgreSQL), loading a
study, and which of its trials are feasible and on the Pareto front.

The bottom of :mod:`nas.search`: ``run`` (searching), ``export`` (configs and plots), ``studies``
(study files and batches), ``dashboard`` and the service read and write studies through it.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas._io import folder_lock
from nas.errors import AnyshapeError, missing_extra
from nas.search.problem import shape_key

#: Seconds between heartbeats of a running trial, and after which a silent trial is stale.
HEARTBEAT_S = 5
GRACE_S = 20
#: Tries to open a storage whose schema another process may be creating at the same moment.
SCHEMA_ATTEMPTS = 3


def db_url(url: str, option: str = "--storage", example: str = "sqlite:///path.db") -> Any:
    """A SQLAlchemy URL, or a one-line error naming the option."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        raise AnyshapeError(f"{option} {url!r} is not a database URL (like {example} or postgresql://host/db)") from None


def parse_db_url(url: str, option: str, example: str) -> Any:
    """A SQLAlchemy URL, or a one-line error; a SQLite file's folder is created."""
    parsed = db_url(url, option, example)
    path = sqlite_file(parsed)
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AnyshapeError(f"cannot create the folder of {path}: {e.strerror}") from None
    return parsed


def sqlite_file(parsed: Any) -> str | None:
    """The file of a parsed SQLite URL; None for other databases and in-memory SQLite."""
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return str(parsed.database)
    return None


def make_storage(url: str, *, heartbeat: bool = True) -> Any:
    """An Optuna RDB storage for ``url``, with heartbeats so killed workers' trials are retried."""
    import optuna

    parsed = parse_db_url(url, "--storage", "sqlite:///path.db")
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_file(parsed)
    if path:
        engine_kwargs["creator"] = functools.partial(_sqlite_connect, path)
    elif parsed.get_backend_name() != "sqlite":
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        with quiet_experimental():
            kwargs = dict(
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with quiet_experimental(), (folder_lock(Path(path).parent) if path else contextlib.nullcontext()):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as e:  # driver missing, host unreachable, bad credentials: one clear line
            # Processes opening one new SQLite file take turns (the folder lock): two creating its
            # schema at once collide ("UNIQUE constraint failed: alembic_version.version_num").
            # Other databases, and a lock-less platform, retry after a lost race instead.
            if _lost_schema_race(e) and attempt < SCHEMA_ATTEMPTS - 1:
                time.sleep(0.5 * (attempt + 1))  # another process created the schema meanwhile: load it
                continue
            cause = e if isinstance(e, ModuleNotFoundError) else e.__cause__  # Optuna wraps the driver's import error
            if isinstance(cause, ModuleNotFoundError) and (extra := missing_extra(cause)):
                raise AnyshapeError(extra) from None  # the database driver of an extra not installed
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AnyshapeError(f"cannot open study storage {parsed.render_as_string(hide_password=True)}: {first}") from None
    raise AssertionError("unreachable")


def _lost_schema_race(error: Exception) -> bool:
    """Whether ``error`` is another process's schema creation winning over ours."""
    text = str(error).lower()
    return any(sign in text for sign in ("already exists", "unique constraint", "duplicate key"))


def _sqlite_connect(path: str) -> sqlite3.Connection:
    """SQLite in WAL mode with normal sync: a killed process loses no committed trial, and a
    commit costs no fsync (about 10 ms each on this disk otherwise). Waits for other workers' locks."""
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def pareto_trials(study: Any) -> list[Any]:
    """Feasible, non-dominated complete trials (Optuna's ``best_trials``), one per shape, fastest first."""
    unique: dict[str, Any] = {}
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        unique.setdefault(shape_key(trial.user_attrs.get("shape", {"trial": trial.number})), trial)
    return sorted(unique.values(), key=lambda t: (t.values[1], t.number))


def load_storage(storage: str) -> Any:
    """The Optuna storage of an existing study database (a SQLite file that is not there is an error)."""
    path = sqlite_file(db_url(storage))
    if path and not Path(path).is_file():
        raise AnyshapeError(f"no study storage at {path}; run anyshape search first or pass --storage")
    return make_storage(storage, heartbeat=False)


def load_study(storage: str, name: str) -> Any:
    import optuna

    store = load_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise AnyshapeError(f"no study {name!r} in {storage}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=store)


def is_feasible(trial: Any) -> bool:
    """Feasible as Optuna defines it: every constraint value (either storage format) is at most 0."""
    return all(value <= 0.0 for value in trial.constraints.values())


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna marks heartbeats and metric names experimental; the warnings are noise for our users."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
