"""The one exception type for errors a user can cause.

The CLI prints an :class:`AnyshapeError` as one line on stderr and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AnyshapeError(Exception):
    """A problem with the user's input: a path, a shape, a config, a table, a request.

    The message says what is wrong and, where it can, what to do instead.
    """
