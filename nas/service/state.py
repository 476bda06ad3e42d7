"""The service's state behind the endpoints: the runs table, the cached study and device indexes,
and the worker pool that runs queued searches. No FastAPI here: the routes (:mod:`nas.service.routes`)
reach it through a dependency.
"""

from __future__ import annotations

import logging
import threading

from nas.errors import AnyshapeError
from nas.service.catalog import Cached, Storages, StudyEntry, load_devices, load_studies, storage_urls
from nas.service.runs import Run, RunStore, WorkerPool, WorkerSettings, search_config
from nas.service.settings import ServiceSettings

log = logging.getLogger("anyshape.service")


class Service:
    """The state behind the endpoints: the runs table, the cached indexes, the worker pool."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.store = RunStore(settings.db_url)
        self.worker_settings = WorkerSettings(
            db_url=settings.db_url, studies_dir=str(settings.studies_dir), search_storage=settings.search_storage,
            heartbeat_s=settings.heartbeat_s, stale_after_s=settings.stale_after_s, max_attempts=settings.max_attempts,
            poll_s=min(1.0, settings.heartbeat_s),
        )
        self.storages = Storages()
        self.studies = Cached(lambda: load_studies(storage_urls(settings.studies_dir, settings.storages), self.storages),
                              settings.cache_ttl_s)
        self.devices = Cached(lambda: load_devices(settings.tables_root), max(settings.cache_ttl_s, 30.0))
        self.pool: WorkerPool | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        for run_id, what in self.store.requeue_stale(self.settings.stale_after_s, self.settings.max_attempts):
            log.warning("run %s: its worker is gone; %s", run_id, what)
        if self.settings.workers:
            self.pool = WorkerPool(self.worker_settings, self.settings.workers)
            self.pool.start()
            self._monitor = threading.Thread(target=self._watch, name="anyshape-monitor", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        assert self.pool is not None
        while not self._stop.wait(self.settings.heartbeat_s):  # ends when the service stops
            try:
                for run_id, what in self.pool.check(self.store):
                    log.warning("run %s: its worker is gone; %s", run_id, what)
            except Exception:  # a database hiccup: try again next beat
                log.exception("worker check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=self.settings.heartbeat_s + 5)
        if self.pool is not None:
            self.pool.stop(self.store)
        self.store.dispose()

    def study(self, name: str) -> StudyEntry:
        studies = self.studies.get()
        for entry in studies:
            if entry.name == name:
                return entry
        from fastapi import HTTPException

        known = ", ".join(s.name for s in studies[:50]) or "none"
        raise HTTPException(404, f"no study {name!r}; studies: {known}")

    def complete_trials(self, run: Run) -> int | None:
        """Complete trials in the run's study now (None when its storage cannot be read)."""
        import optuna
        from optuna.trial import TrialState

        try:
            url = search_config(run.config, self.worker_settings).storage_url
            if url.startswith("sqlite:///"):
                from pathlib import Path

                if not Path(url[len("sqlite:///"):]).is_file():
                    return 0
            storage = self.storages.get(url)
            study_id = storage.get_study_id_from_name(run.study)
            return len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)))
        except KeyError:
            return 0
        except (AnyshapeError, optuna.exceptions.OptunaError, OSError):
            return None
