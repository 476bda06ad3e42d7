"""The HTTP routes, one router per area, over the :class:`~nas.service.state.Service` that
``create_app`` puts in ``app.state`` (the ``ServiceDep`` dependency) and the bearer-token checks
(``read_access``, ``write_access``).

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run time.
Imported only by ``create_app``, so FastAPI is imported only where the service runs.
"""

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nas.service.models import (
    DeviceOut,
    Health,
    RecommendIn,
    RecommendOut,
    RunIn,
    RunOut,
    RunResultsOut,
    StudyDetailOut,
    StudyOut,
)
from nas.service.runs import Run, search_config
from nas.service.state import Service
from nas.service.views import recommend, study_detail, study_out, subnet


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
bearer = HTTPBearer(auto_error=False, description="The service's API token (ANYSHAPE_API_TOKEN or --token-file)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def check_token(service: Service, credentials: HTTPAuthorizationCredentials | None) -> None:
    token = service.settings.token
    if token is None:
        raise HTTPException(403, "this service is read-only (started without an API token); writes are refused")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "this needs the API token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})


def read_access(service: ServiceDep, credentials: Credentials) -> None:
    if service.settings.auth_reads:
        check_token(service, credentials)


def write_access(service: ServiceDep, credentials: Credentials) -> None:
    if service.settings.read_only:
        raise HTTPException(403, "this service is read-only (started with --read-only); writes are refused")
    check_token(service, credentials)


reads = [Depends(read_access)]

# ---- service --------------------------------------------------------------------------------
service_router = APIRouter(tags=["service"])


@service_router.get("/health", response_model=Health)
def health(service: ServiceDep, request: Request) -> Health:
    """Liveness, and whether writes are accepted."""
    settings = service.settings
    return Health(status="ok", version=request.app.version, read_only=not settings.writable, auth_reads=settings.auth_reads,
                  workers=settings.workers, runs_db=service.store.url)


# ---- devices and studies ----------------------------------------------------------------------
devices_router = APIRouter(tags=["devices"], dependencies=reads)


@devices_router.get("/devices", response_model=list[DeviceOut])
def devices(service: ServiceDep) -> list[dict[str, Any]]:
    """Every device with its latency tables; a table's source is measured or roofline-estimate."""
    return list(service.devices.get())


studies_router = APIRouter(tags=["studies"], dependencies=reads)


@studies_router.get("/studies", response_model=list[StudyOut])
def studies(service: ServiceDep) -> list[StudyOut]:
    """Every study in the configured storages, with the size of its feasible Pareto front."""
    return [study_out(s) for s in service.studies.get()]


@studies_router.get("/studies/{name}", response_model=StudyDetailOut)
def study(name: str, service: ServiceDep) -> StudyDetailOut:
    """One study and its feasible Pareto front, fastest first."""
    return study_detail(service.study(name))


@studies_router.get("/studies/{name}/configs/{trial}",
                    responses={200: {"content": {"application/yaml": {}, "application/json": {}}, "description": "An anyshape/subnet-v1 config"}})
def config(name: str, trial: int, service: ServiceDep, fmt: str = Query("yaml", alias="format", pattern="^(yaml|json)$")) -> Response:
    """Download the subnet config of a Pareto trial (YAML or JSON), ready for `anyshape extract`."""
    entry = service.study(name)
    sub = subnet(entry, trial)
    media = "application/json" if fmt == "json" else "application/yaml"
    filename = f"{entry.name}-t{trial}.{fmt}"
    return Response(sub.dumps(fmt), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---- recommend --------------------------------------------------------------------------------
recommend_router = APIRouter(tags=["recommend"], dependencies=reads)


@recommend_router.post("/recommend", response_model=RecommendOut)
def recommend_endpoint(body: RecommendIn, service: ServiceDep) -> RecommendOut:
    """The most accurate exported config whose predicted latency fits the budget, with its reasons;
    200 with `found: false` and a reason (and the closest candidate) when nothing fits."""
    return recommend(service.studies.get(), body)


# ---- runs -------------------------------------------------------------------------------------
runs_router = APIRouter(tags=["runs"])


@runs_router.post("/runs", response_model=RunOut, status_code=202, dependencies=[Depends(write_access)])
def submit(body: RunIn, service: ServiceDep) -> RunOut:
    """Queue a search run; worker processes run it on the study storage. Needs the token."""
    settings = service.settings
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
    return run_out(service, service.store.submit(config))


@runs_router.get("/runs", response_model=list[RunOut], dependencies=reads)
def runs(service: ServiceDep, status: str | None = Query(None, pattern="^(queued|running|done|failed)$"),
         limit: int = Query(100, ge=1, le=1000)) -> list[RunOut]:
    """Runs, newest first."""
    return [run_out(service, r, progress=r.status == "running") for r in service.store.find(status=status, limit=limit)]


@runs_router.get("/runs/{run_id}", response_model=RunOut, dependencies=reads)
def run(run_id: str, service: ServiceDep) -> RunOut:
    """A run's status and progress (complete trials in its study now)."""
    return run_out(service, get_run(service, run_id))


@runs_router.get("/runs/{run_id}/results", response_model=RunResultsOut, dependencies=reads)
def results(run_id: str, service: ServiceDep) -> RunResultsOut:
    """A finished run's study and Pareto front; 409 while it is queued or running, or when it failed."""
    found = get_run(service, run_id)
    if found.status != "done":
        why = f": {found.error}" if found.error else ""
        raise HTTPException(409, f"run {run_id} is {found.status}{why}; results come when it is done")
    service.studies.clear()  # a run just finished: read the front fresh
    return RunResultsOut(run=run_out(service, found), study=study_detail(service.study(found.study)))


def get_run(service: Service, run_id: str) -> Run:
    found = service.store.get(run_id) if len(run_id) <= 64 else None
    if found is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return found


def run_out(service: Service, r: Run, *, progress: bool = True) -> RunOut:
    done = service.complete_trials(r) if progress else None
    return RunOut(
        id=r.id, study=r.study, status=r.status, trials=r.trials,  # type: ignore[arg-type]
        complete_trials=done, progress=None if done is None else min(done / r.trials, 1.0),
        attempts=r.attempts, error=r.error, created_at=r.created_at, started_at=r.started_at,
        finished_at=r.finished_at, heartbeat_at=r.heartbeat_at, worker_pid=r.worker_pid,
        config=r.config, result=r.result, url=f"/runs/{r.id}", results_url=f"/runs/{r.id}/results",
    )


ROUTERS = (service_router, devices_router, studies_router, recommend_router, runs_router)
