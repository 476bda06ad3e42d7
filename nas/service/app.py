"""The FastAPI application: ``create_app(settings)``; ``serve(settings)`` runs it under uvicorn.

Reads (devices, studies, recommend, runs) are open unless ``auth_reads``; writes (submitting a
run) need ``Authorization: Bearer <token>``, compared in constant time. Recommend answers 200
with ``found: false`` and a reason when nothing fits (a 404 is kept for things that do not
exist: an unknown study, trial or run).

No ``from __future__ import annotations`` here: FastAPI resolves the endpoints' annotations,
which name classes imported inside ``create_app``.
"""

import contextlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from nas.errors import AnyshapeError
from nas.service.catalog import Cached, ParetoPoint, Storages, StudyEntry, load_devices, load_studies, storage_urls
from nas.service.models import (
    AccuracyOut,
    ClosestOut,
    DeviceOut,
    ErrorOut,
    Health,
    ParetoPointOut,
    RecommendIn,
    RecommendOut,
    RunIn,
    RunOut,
    RunResultsOut,
    StudyDetailOut,
    StudyOut,
)
from nas.service.runs import Run, RunStore, WorkerPool, WorkerSettings, search_config
from nas.service.settings import ServiceSettings

log = logging.getLogger("anyshape.service")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _send_error(send, 413, f"request body is over the limit of {self.limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:  # bounded: stops at the limit or at the body's end
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_error(send, 413, f"request body is over the limit of {self.limit} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


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


def create_app(settings: ServiceSettings) -> Any:
    """The FastAPI app over the library; its lifespan starts and stops the worker processes."""
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    import nas

    service = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        service.start()
        if not settings.writable:
            log.warning("anyshape serve is read-only (started without an API token): every write is refused")
        try:
            yield
        finally:
            service.stop()

    errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422)}
    app = FastAPI(
        title="anyshape",
        version=getattr(nas, "__version__", "0.1.0"),
        description=(
            "Hardware-aware NAS over any-shape LLM supernets: which subnet for this device and latency budget, "
            "and batch search runs. Writes need `Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
        responses=errors,
    )
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="The service's API token (ANYSHAPE_API_TOKEN or --token-file)")

    def check_token(credentials: HTTPAuthorizationCredentials | None) -> None:
        if settings.token is None:
            raise HTTPException(403, "this service is read-only (started without an API token); writes are refused")
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "this needs the API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
            raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})

    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    def read_access(credentials: Credentials) -> None:
        if settings.auth_reads:
            check_token(credentials)

    def write_access(credentials: Credentials) -> None:
        if settings.read_only:
            raise HTTPException(403, "this service is read-only (started with --read-only); writes are refused")
        check_token(credentials)

    @app.exception_handler(AnyshapeError)
    async def user_error(_request: Request, exc: AnyshapeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    reads = [Depends(read_access)]

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness, and whether writes are accepted."""
        return Health(status="ok", version=app.version, read_only=not settings.writable, auth_reads=settings.auth_reads,
                      workers=settings.workers, runs_db=service.store.url)

    @app.get("/devices", response_model=list[DeviceOut], dependencies=reads, tags=["devices"])
    def devices() -> list[dict[str, Any]]:
        """Every device with its latency tables; a table's source is measured or roofline-estimate."""
        return list(service.devices.get())

    @app.get("/studies", response_model=list[StudyOut], dependencies=reads, tags=["studies"])
    def studies() -> list[StudyOut]:
        """Every study in the configured storages, with the size of its feasible Pareto front."""
        return [study_out(s) for s in service.studies.get()]

    @app.get("/studies/{name}", response_model=StudyDetailOut, dependencies=reads, tags=["studies"])
    def study(name: str) -> StudyDetailOut:
        """One study and its feasible Pareto front, fastest first."""
        return study_detail(service.study(name))

    @app.get("/studies/{name}/configs/{trial}", dependencies=reads, tags=["studies"],
             responses={200: {"content": {"application/yaml": {}, "application/json": {}}, "description": "An anyshape/subnet-v1 config"}})
    def config(name: str, trial: int, fmt: str = Query("yaml", alias="format", pattern="^(yaml|json)$")) -> Response:
        """Download the subnet config of a Pareto trial (YAML or JSON), ready for `anyshape extract`."""
        entry = service.study(name)
        sub = subnet(entry, trial)
        media = "application/json" if fmt == "json" else "application/yaml"
        filename = f"{entry.name}-t{trial}.{fmt}"
        return Response(sub.dumps(fmt), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.post("/recommend", response_model=RecommendOut, dependencies=reads, tags=["recommend"])
    def recommend_endpoint(body: RecommendIn) -> RecommendOut:
        """The most accurate exported config whose predicted latency fits the budget, with its reasons;
        200 with `found: false` and a reason (and the closest candidate) when nothing fits."""
        return recommend(service.studies.get(), body)

    @app.post("/runs", response_model=RunOut, status_code=202, dependencies=[Depends(write_access)], tags=["runs"])
    def submit(body: RunIn) -> RunOut:
        """Queue a search run; worker processes run it on the study storage. Needs the token."""
        if body.trials > settings.max_trials:
            raise HTTPException(422, f"trials is {body.trials}; this service allows at most {settings.max_trials}")
        if body.workers > settings.max_run_workers:
            raise HTTPException(422, f"workers is {body.workers}; this service allows at most {settings.max_run_workers}")
        if body.factory not in settings.factories:
            raise HTTPException(422, f"factory {body.factory!r} is not allowed here; allowed: {', '.join(settings.factories)}")
        config = body.model_dump()
        search_config(config, service.worker_settings)  # validates (AnyshapeError -> 400) before queueing
        if service.store.count_active(body.study):
            raise HTTPException(409, f"study {body.study!r} already has a queued or running run; wait for it or use another study")
        if service.store.count_active() >= settings.max_active_runs:
            raise HTTPException(409, f"{settings.max_active_runs} runs are already queued or running; try again later")
        return run_out(service.store.submit(config))

    @app.get("/runs", response_model=list[RunOut], dependencies=reads, tags=["runs"])
    def runs(status: str | None = Query(None, pattern="^(queued|running|done|failed)$"),
             limit: int = Query(100, ge=1, le=1000)) -> list[RunOut]:
        """Runs, newest first."""
        return [run_out(r, progress=r.status == "running") for r in service.store.find(status=status, limit=limit)]

    @app.get("/runs/{run_id}", response_model=RunOut, dependencies=reads, tags=["runs"])
    def run(run_id: str) -> RunOut:
        """A run's status and progress (complete trials in its study now)."""
        return run_out(get_run(run_id))

    @app.get("/runs/{run_id}/results", response_model=RunResultsOut, dependencies=reads, tags=["runs"])
    def results(run_id: str) -> RunResultsOut:
        """A finished run's study and Pareto front; 409 while it is queued or running, or when it failed."""
        found = get_run(run_id)
        if found.status != "done":
            why = f": {found.error}" if found.error else ""
            raise HTTPException(409, f"run {run_id} is {found.status}{why}; results come when it is done")
        service.studies.clear()  # a run just finished: read the front fresh
        return RunResultsOut(run=run_out(found), study=study_detail(service.study(found.study)))

    def get_run(run_id: str) -> Run:
        found = service.store.get(run_id) if len(run_id) <= 64 else None
        if found is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return found

    def run_out(r: Run, *, progress: bool = True) -> RunOut:
        done = service.complete_trials(r) if progress else None
        return RunOut(
            id=r.id, study=r.study, status=r.status, trials=r.trials,  # type: ignore[arg-type]
            complete_trials=done, progress=None if done is None else min(done / r.trials, 1.0),
            attempts=r.attempts, error=r.error, created_at=r.created_at, started_at=r.started_at,
            finished_at=r.finished_at, heartbeat_at=r.heartbeat_at, worker_pid=r.worker_pid,
            config=r.config, result=r.result, url=f"/runs/{r.id}", results_url=f"/runs/{r.id}/results",
        )

    return BodyLimit(app, settings.max_body_bytes) if settings.max_body_bytes else app


def study_out(s: StudyEntry) -> StudyOut:
    return StudyOut(
        name=s.name, storage=s.storage, device=s.device, runtime=s.runtime, workload=s.workload,
        accuracy_metric=s.accuracy_metric, accuracy_direction=s.accuracy_direction, latency_source=s.latency_source,
        latency_calibrated=s.latency_calibrated, latency_calibration_id=s.latency_calibration_id,
        base_model=s.base_model, complete_trials=s.complete_trials, pareto_size=len(s.pareto),
    )


def study_detail(s: StudyEntry) -> StudyDetailOut:
    points = [
        ParetoPointOut(trial=p.trial, accuracy=p.accuracy, latency_ms=p.latency_ms, memory_mb=p.memory_mb, shape=p.shape,
                       latency_source=p.latency_source, latency_calibrated=s.latency_calibrated,
                       latency_calibration_id=s.latency_calibration_id, config_url=f"/studies/{s.name}/configs/{p.trial}")
        for p in s.pareto
    ]
    return StudyDetailOut(**study_out(s).model_dump(), pareto=points)


def subnet(entry: StudyEntry, trial: int) -> Any:
    """The subnet config of a Pareto trial of ``entry`` (built as ``anyshape export`` builds it)."""
    from types import SimpleNamespace

    from fastapi import HTTPException

    from nas.search.export import subnet_config

    point = next((p for p in entry.pareto if p.trial == trial), None)
    if point is None:
        front = ", ".join(str(p.trial) for p in entry.pareto) or "none"
        raise HTTPException(404, f"trial {trial} is not on the feasible Pareto front of study {entry.name!r}; its Pareto trials: {front}")
    fake_trial = SimpleNamespace(
        number=point.trial, values=[point.accuracy, point.latency_ms],
        user_attrs={"shape": point.shape, "predicted_latency_ms": point.latency_ms, "latency_source": point.latency_source,
                    "memory_mb": point.memory_mb},
    )
    return subnet_config(entry.attrs, fake_trial, entry.accuracy_metric)


def recommend(studies: tuple[StudyEntry, ...], body: RecommendIn) -> RecommendOut:
    """The best Pareto config over ``studies`` for the request: a pure function of its arguments."""
    from nas.workload import Workload

    workload = Workload.parse(body.workload).name
    head: dict[str, Any] = dict(device=body.device, runtime=body.runtime, workload=workload, latency_budget_ms=body.latency_budget_ms)
    matching = [
        s for s in studies
        if s.device == body.device and s.runtime == body.runtime and s.workload == workload
        and (body.study is None or s.name == body.study) and (body.base_model is None or s.base_model == body.base_model)
    ]
    candidates = [(s, p) for s in matching for p in s.pareto]
    if not candidates:
        have = sorted({f"{s.device}/{s.runtime}/{s.workload}" for s in studies if s.pareto})
        return RecommendOut(found=False, candidates=0, **head,
                            reason=f"no searched study has Pareto configs for {body.device}/{body.runtime}/{workload}"
                                   + (f" (study={body.study})" if body.study else "")
                                   + (f" (base_model={body.base_model})" if body.base_model else "")
                                   + f"; searched: {', '.join(have) or 'none'}. Submit a search run for it (POST /runs)")
    metrics = sorted({(s.accuracy_metric, s.accuracy_direction) for s in matching if s.pareto})
    if len(metrics) > 1:
        names = ", ".join(f"{s.name} ({s.accuracy_metric})" for s in matching if s.pareto)
        raise AnyshapeError(f"studies with different accuracy metrics match: {names}; pass study or base_model to choose")
    fits = [(s, p) for s, p in candidates if p.latency_ms <= body.latency_budget_ms]
    good = [(s, p) for s, p in fits if body.min_accuracy is None or s.meets(p.accuracy, body.min_accuracy)]
    if not good:
        fastest = min(candidates, key=lambda c: (c[1].latency_ms, c[0].name, c[1].trial))
        closest = ClosestOut(study=fastest[0].name, trial=fastest[1].trial, predicted_latency_ms=fastest[1].latency_ms,
                             accuracy=fastest[1].accuracy)
        if not fits:
            reason = (f"no config's predicted latency fits {body.latency_budget_ms:g} ms; the fastest of {len(candidates)} "
                      f"is {fastest[1].latency_ms:.4g} ms (study {fastest[0].name}, trial {fastest[1].trial})")
        else:
            metric = matching[0].accuracy_metric
            best = max(fits, key=lambda c: c[1].accuracy if c[0].accuracy_direction != "minimize" else -c[1].accuracy)
            reason = (f"{len(fits)} configs fit {body.latency_budget_ms:g} ms but none reaches {metric} {body.min_accuracy:g}; "
                      f"the best that fits has {best[1].accuracy:.4g} (study {best[0].name}, trial {best[1].trial})")
        return RecommendOut(found=False, candidates=len(candidates), reason=reason, closest=closest, **head)
    study, point = good[0]
    for s, p in good[1:]:  # most accurate; then fastest; then study name and trial, so the answer is deterministic
        if s.better(p.accuracy, point.accuracy) or (
            p.accuracy == point.accuracy and (p.latency_ms, s.name, p.trial) < (point.latency_ms, study.name, point.trial)
        ):
            study, point = s, p
    reasons = [
        f"predicted latency {point.latency_ms:.4g} ms <= budget {body.latency_budget_ms:g} ms "
        f"for {body.device}/{body.runtime}/{workload}",
        f"latency table source: {point.latency_source}" + _calibration_note(study, point),
        f"most accurate of {len(good)} Pareto configs within the budget ({len(candidates)} searched): "
        f"{study.accuracy_metric} {point.accuracy:.6g} ({study.accuracy_direction})",
    ]
    if body.min_accuracy is not None:
        reasons.append(f"meets the minimum {study.accuracy_metric} {body.min_accuracy:g}")
    return RecommendOut(
        found=True, reason=reasons[-1 if body.min_accuracy is None else -2], candidates=len(candidates), **head,
        study=study.name, trial=point.trial,
        accuracy=AccuracyOut(metric=study.accuracy_metric, value=point.accuracy, direction=study.accuracy_direction),
        predicted_latency_ms=point.latency_ms, latency_source=point.latency_source,
        latency_calibrated=study.latency_calibrated, latency_calibration_id=study.latency_calibration_id, memory_mb=point.memory_mb,
        shape=point.shape, reasons=reasons, config=subnet(study, point.trial).to_dict(),
        config_url=f"/studies/{study.name}/configs/{point.trial}",
    )


def _calibration_note(study: StudyEntry, point: ParetoPoint) -> str:
    """What the recommend reasons add after the table's source: the calibration, or that an estimate is only one."""
    if study.latency_calibrated:
        which = f" (calibration {study.latency_calibration_id})" if study.latency_calibration_id else ""
        return f", calibrated on the searching machine{which}"
    if point.latency_source != "measured":
        return " (an estimate from published specs, not a measurement: verify on the device)"
    return ""


def serve(settings: ServiceSettings) -> None:
    """Run the service under uvicorn until interrupted (workers stop with it)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=10, limit_concurrency=256)
