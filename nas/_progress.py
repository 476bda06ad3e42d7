"""Progress a user sees on stderr: a bar for counted work, a timed line for a phase that is not counted.

Every command that runs longer than a couple of seconds shows one of the two; ``--no-progress``
(and ``--json``, whose stdout a program reads) turns both off.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterator
from typing import Any


def bar(total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (a disabled one when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


#: Whether phases deep inside a library call (an ONNX export inside an extraction) are shown: the
#: command line turns it on for the call it makes (:func:`shown`); a library user sees nothing.
_SHOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("anyshape_progress", default=False)


@contextlib.contextmanager
def shown(enabled: bool) -> Iterator[None]:
    """Within this block, :func:`phase` calls that do not say otherwise print (or not)."""
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)


@contextlib.contextmanager
def phase(label: str, enabled: bool | None = None) -> Iterator[None]:
    """A phase a user sees: ``label: 12.3 s`` when it ends, and on a terminal also ``label ...`` when
    it starts. A log or pipe gets no start line, so a phase that fails on bad input leaves the
    error as the one line there. Nothing when disabled (``None``: as the enclosing :func:`shown`
    block says)."""
    if enabled is None:
        enabled = _SHOWN.get()
    if not enabled:
        yield
        return
    if sys.stderr.isatty():
        sys.stderr.write(f"{label} ...\n")
        sys.stderr.flush()
    start = time.perf_counter()
    yield
    sys.stderr.write(f"{label}: {time.perf_counter() - start:.1f} s\n")
    sys.stderr.flush()
