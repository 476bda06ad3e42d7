"""The one exception type for errors a user can cause.

The CLI prints an :class:`AnyshapeError` as one line on stderr and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AnyshapeError(Exception):
    """A problem with the user's input: a path, a shape, a config, a table, a request.

    The message says what is wrong and, where it can, what to do instead.
    """


#: Top-level modules of optional dependencies -> the extra that installs them (pyproject.toml).
EXTRAS = {"fastapi": "service", "uvicorn": "service", "httpx": "service", "pydantic": "service", "starlette": "service",
          "optuna_dashboard": "dashboard", "psycopg": "postgres", "psycopg2": "postgres"}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one-line message for an optional dependency that is not installed, or None when ``error`` is another import failure."""
    top = (error.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f"this needs the optional package {top}, which is not installed: pip install 'anyshape[{extra}]'"
