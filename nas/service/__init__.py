"""``anyshape serve``: the library over HTTP (FastAPI), with a run queue in a database and worker processes.

Imports of FastAPI, uvicorn and Optuna happen inside the functions that use them.
"""

from __future__ import annotations

from nas.service.settings import ServiceSettings, read_token

__all__ = ["ServiceSettings", "create_app", "read_token", "serve"]


def create_app(settings: ServiceSettings) -> object:
    from nas.service.app import create_app as _create_app

    return _create_app(settings)


def serve(settings: ServiceSettings) -> None:
    from nas.service.app import serve as _serve

    _serve(settings)
