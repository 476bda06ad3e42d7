"""What the service reads: the studies in its storages (with their Pareto fronts) and the latency tables.

Both are indexed into immutable snapshots, rebuilt at most every ``cache_ttl_s`` seconds under a
lock and swapped in whole, so concurrent requests always see one consistent index.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from nas.errors import AnyshapeError

T = TypeVar("T")


@dataclass(frozen=True)
class ParetoPoint:
    """One feasible Pareto trial of a study: a recommendable subnet."""

    trial: int
    accuracy: float
    latency_ms: float
    memory_mb: float | None
    shape: dict[str, Any]
    latency_source: str


@dataclass(frozen=True)
class StudyEntry:
    name: str
    storage: str  # URL with any password hidden
    storage_url: str  # the URL itself (never sent to clients)
    device: str | None
    runtime: str | None
    workload: str | None
    accuracy_metric: str
    accuracy_direction: str
    latency_source: str | None
    base_model: str | None
    complete_trials: int
    pareto: tuple[ParetoPoint, ...]
    attrs: dict[str, Any]
    latency_calibrated: bool = False  # predicted with the searching machine's calibration (anyshape calibrate)
    latency_calibration_id: str | None = None

    def better(self, a: float, b: float) -> bool:
        """Accuracy ``a`` is strictly better than ``b`` in this study's direction."""
        return a < b if self.accuracy_direction == "minimize" else a > b

    def meets(self, value: float, threshold: float) -> bool:
        """``value`` is at least as good as ``threshold``."""
        return value <= threshold if self.accuracy_direction == "minimize" else value >= threshold


class Cached(Generic[T]):
    """A value rebuilt by ``build`` when older than ``ttl_s``; one rebuild at a time, during which
    other readers get the previous snapshot (they wait only for the first one)."""

    def __init__(self, build: Callable[[], T], ttl_s: float):
        self._build = build
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: tuple[float, T] | None = None

    def get(self) -> T:
        current = self._value
        if current is not None and time.monotonic() - current[0] < self._ttl_s:
            return current[1]
        if current is not None and not self._lock.acquire(blocking=False):
            return current[1]  # another request is rebuilding: answer from the previous snapshot meanwhile
        if current is None:
            self._lock.acquire()
        try:
            current = self._value
            if current is not None and time.monotonic() - current[0] < self._ttl_s:
                return current[1]
            value = self._build()
            self._value = (time.monotonic(), value)
            return value
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._value = None


def storage_urls(studies_dir: str | Path, extra: Sequence[str] = ()) -> list[str]:
    """The configured storage URLs, then every ``study.db`` one or two folders under ``studies_dir``."""
    root = Path(studies_dir).absolute()
    files = sorted({*root.glob("*/study.db"), *root.glob("*/*/study.db")}) if root.is_dir() else []
    urls = list(dict.fromkeys(extra))
    urls += [f"sqlite:///{path}" for path in files if f"sqlite:///{path}" not in urls]
    return urls


class Storages:
    """Opened study storages by URL (opening one costs about a second: schema and version checks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {}

    def get(self, url: str) -> Any:
        from nas.search.storage import make_storage

        with self._lock:
            if url not in self._open:
                self._open[url] = make_storage(url, heartbeat=False)
            return self._open[url]


def load_studies(urls: Sequence[str], storages: Storages | None = None) -> tuple[StudyEntry, ...]:
    """Every study in ``urls``; a name found in two storages is listed once, from the first (as configured)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storages = storages or Storages()
    seen: dict[str, StudyEntry] = {}
    for url in urls:
        try:
            storage = storages.get(url)
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        except AnyshapeError:
            continue  # a storage that cannot be opened now is skipped; it is listed again once it can
        for summary in summaries:
            if summary.study_name in seen:
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            seen[summary.study_name] = study_entry(study, url)
    return tuple(sorted(seen.values(), key=lambda s: s.name))


def study_entry(study: Any, url: str) -> StudyEntry:
    from optuna.trial import TrialState

    from nas.search.storage import pareto_trials
    from nas.service.runs import _hide_password

    attrs = dict(study.user_attrs)
    search = attrs.get("search_config") or {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = []
    if len(study.directions) >= 2 and complete:
        for trial in pareto_trials(study):
            if "shape" not in trial.user_attrs:
                continue
            points.append(ParetoPoint(
                trial=trial.number, accuracy=float(trial.values[0]), latency_ms=float(trial.values[1]),
                memory_mb=trial.user_attrs.get("memory_mb"), shape=dict(trial.user_attrs["shape"]),
                latency_source=str(trial.user_attrs.get("latency_source") or attrs.get("latency_source") or "unknown"),
            ))
    base = attrs.get("base_model") or {}
    calibrated, calibration_id = calibration_of(attrs)
    return StudyEntry(
        name=study.study_name, storage=_hide_password(url), storage_url=url,
        device=search.get("device"), runtime=search.get("runtime"), workload=search.get("workload"),
        accuracy_metric=str(attrs.get("accuracy_metric", "accuracy")),
        accuracy_direction=str(attrs.get("accuracy_direction", "maximize")),
        latency_source=attrs.get("latency_source"), base_model=base.get("source"),
        complete_trials=len(complete), pareto=tuple(points), attrs=attrs,
        latency_calibrated=calibrated, latency_calibration_id=calibration_id,
    )


def calibration_of(attrs: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a study's latencies were predicted with the searching machine's calibration, and its ID
    (from the study attribute ``latency_calibration``; studies from before calibrations have none)."""
    record = attrs.get("latency_calibration")
    if not record:
        return False, None
    found = record.get("id") if isinstance(record, dict) else None
    return True, None if found is None else str(found)


def load_devices(tables_root: str | Path) -> tuple[dict[str, Any], ...]:
    """Devices (every known one, and every one with a table), each with its tables."""
    from profilers.devices import known_devices
    from profilers.tables import find_tables_root, list_tables

    tables = list_tables(find_tables_root(tables_root))
    known = known_devices()
    names = list(dict.fromkeys([*known, *(t["device"] for t in tables)]))
    return tuple(
        {"device": name, "known": name in known,
         "tables": [{k: t.get(k) for k in ("runtime", "name", "source", "rows", "date", "model", "status")}
                    for t in tables if t["device"] == name]}
        for name in names
    )
