"""The service's settings: one validated dataclass, built by ``anyshape serve`` or by tests.

The API token comes from the environment (``ANYSHAPE_API_TOKEN``) or a file (``--token-file``).
Without one the service refuses to start writable; ``read_only=True`` starts it without writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nas.errors import AnyshapeError

TOKEN_ENV = "ANYSHAPE_API_TOKEN"
MIN_TOKEN_CHARS = 16
#: Search factories a run may name; a factory is code, so a request may only pick from this list.
DEFAULT_FACTORIES = ("nas.search.factory:supernet_problem", "nas.search.testing:fake_problem")


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service finds studies and tables, how it guards writes, and its limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    studies_dir: str = "studies"  # study SQLite files under it (*/study.db, */*/study.db) are listed
    tables_root: str = "latency_tables"
    storages: tuple[str, ...] = ()  # extra study storage URLs to list and recommend from
    search_storage: str | None = None  # where submitted runs put their studies (default: per-study SQLite)
    db: str | None = None  # the runs table (default: sqlite:///<studies_dir>/service.db)
    token: str | None = field(default=None, repr=False)
    read_only: bool = False
    auth_reads: bool = False  # reads need the token too
    workers: int = 1  # worker processes that run queued searches
    max_body_bytes: int = 64 * 1024
    max_trials: int = 5000
    max_run_workers: int = 8  # search processes one run may use
    max_active_runs: int = 100  # queued + running
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0  # a running run whose worker is silent this long is re-queued
    max_attempts: int = 3  # then it is marked failed
    cache_ttl_s: float = 10.0  # how long the study index is reused before re-reading the storages
    factories: tuple[str, ...] = DEFAULT_FACTORIES

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise AnyshapeError(f"--port is {self.port}; allowed range 0..65535")
        if not 0 <= self.workers <= 64:
            raise AnyshapeError(f"--workers is {self.workers}; allowed range 0..64")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise AnyshapeError(f"max_body_bytes is {self.max_body_bytes}; allowed range 1024..16777216")
        if not 1 <= self.max_trials <= 1_000_000:
            raise AnyshapeError(f"--max-trials is {self.max_trials}; allowed range 1..1000000")
        if not 1 <= self.max_run_workers <= 256:
            raise AnyshapeError(f"max_run_workers is {self.max_run_workers}; allowed range 1..256")
        if not 1 <= self.max_active_runs <= 100_000:
            raise AnyshapeError(f"max_active_runs is {self.max_active_runs}; allowed range 1..100000")
        if not 0.05 <= self.heartbeat_s <= 600:
            raise AnyshapeError(f"heartbeat_s is {self.heartbeat_s}; allowed range 0.05..600")
        if not self.stale_after_s >= 2 * self.heartbeat_s:
            raise AnyshapeError(f"stale_after_s ({self.stale_after_s}) must be at least twice heartbeat_s ({self.heartbeat_s})")
        if not 1 <= self.max_attempts <= 100:
            raise AnyshapeError(f"max_attempts is {self.max_attempts}; allowed range 1..100")
        if not 0 <= self.cache_ttl_s <= 3600:
            raise AnyshapeError(f"cache_ttl_s is {self.cache_ttl_s}; allowed range 0..3600")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise AnyshapeError(f"the API token has {len(self.token)} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)")
        if self.token is None and not self.read_only:
            raise AnyshapeError(
                f"no API token: set {TOKEN_ENV} or pass --token-file to accept writes, or pass --read-only to serve reads only"
            )
        if self.auth_reads and self.token is None:
            raise AnyshapeError("--auth-reads needs a token (set ANYSHAPE_API_TOKEN or pass --token-file)")
        for factory in self.factories:
            if ":" not in factory:
                raise AnyshapeError(f"factory {factory!r} must be 'module:function'")

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{Path(self.studies_dir).absolute() / 'service.db'}"

    @property
    def writable(self) -> bool:
        return self.token is not None and not self.read_only


def read_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The API token: the file's first line if a file is given, else ``$ANYSHAPE_API_TOKEN``, else None."""
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AnyshapeError(f"cannot read --token-file {path}: {e.strerror}") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise AnyshapeError(f"--token-file {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None
