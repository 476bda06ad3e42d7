"""Helpers for the service tests (no tests here): a server in a thread or a subprocess, on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from profilers.environment import cpu_slug

DEVICE = cpu_slug()  # studies made with SearchConfig defaults are for this CPU

TOKEN = "test-token-0123456789abcdef"
FAKE = "nas.search.testing:fake_problem"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def server_thread(settings: Any) -> Iterator[str]:
    """``create_app(settings)`` under uvicorn in a thread; yields the base URL."""
    import uvicorn

    from nas.service.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 60, "the service to start")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def server_process(studies: Path, db: str, *, workers: int = 1, port: int | None = None, extra: tuple[str, ...] = (),
                   heartbeat_s: float = 0.5, stale_after_s: float = 3.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``anyshape serve`` in a subprocess; stopped with SIGTERM (graceful) unless the test killed it."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "nas.cli", "serve", "--port", str(port), "--studies", str(studies), "--db", db,
           "--workers", str(workers), "--heartbeat-s", str(heartbeat_s), "--stale-after-s", str(stale_after_s), *extra]
    env = {**os.environ, "ANYSHAPE_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url) or proc.poll() is not None, 90, "anyshape serve to start")
        assert proc.poll() is None, f"anyshape serve exited with {proc.returncode}"
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_body(study: str, trials: int, **kwargs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"study": study, "trials": trials, "factory": FAKE, "device": DEVICE, "runtime": "torch",
                            "workload": "prefill:b1:s128", "seed": 3}
    body.update(kwargs)
    return body
