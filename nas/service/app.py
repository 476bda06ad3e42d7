"""The FastAPI application: ``create_app(settings)``; ``serve(settings)`` runs it under uvicorn.

Reads (devices, studies, recommend, runs) are open unless ``auth_reads``; writes (submitting a
run) need ``Authorization: Bearer <token>``, compared in constant time. Recommend answers 200
with ``found: false`` and a reason when nothing fits (a 404 is kept for things that do not
exist: an unknown study, trial or run). The routes are :mod:`nas.service.routes`, the state
behind them :mod:`nas.service.state`, the answers :mod:`nas.service.views`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from nas.errors import AnyshapeError
from nas.service.models import (
    ErrorOut,
)
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


def create_app(settings: ServiceSettings) -> Any:
    """The FastAPI app over the library (the routers of :mod:`nas.service.routes`); its lifespan
    starts and stops the worker processes."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    import nas
    from nas.service.routes import ROUTERS
    from nas.service.state import Service

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

    @app.exception_handler(AnyshapeError)
    async def user_error(_request: Request, exc: AnyshapeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    for router in ROUTERS:
        app.include_router(router)
    return BodyLimit(app, settings.max_body_bytes) if settings.max_body_bytes else app


def serve(settings: ServiceSettings) -> None:
    """Run the service under uvicorn until interrupted (workers stop with it)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=10, limit_concurrency=256)
