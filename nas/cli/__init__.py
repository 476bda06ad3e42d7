"""The ``anyshape`` command line: thin wrappers that parse, call one library function, print.

Errors a user can cause are printed as one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import sys

import click
import typer

from nas.cli import (  # noqa: F401  (commands register on import)
    calibrate_cmd,
    corpus_cmd,
    dashboard_cmd,
    device_cmd,
    extract_cmd,
    inspect_cmd,
    predictor_cmd,
    profile_cmd,
    quickstart_cmd,
    search_cmd,
    serve_cmd,
    supernet_cmd,
)
from nas.cli._app import app
from nas.errors import AnyshapeError, missing_extra

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    from typer._click import exceptions as typer_click  # typer vendors its own click

    usage_errors = (click.ClickException, typer_click.ClickException)
    command = typer.main.get_command(app)
    try:
        status = command.main(args=argv, prog_name="anyshape", standalone_mode=False)
        if isinstance(status, int) and not isinstance(status, bool):  # typer.Exit(code) comes back as the return value
            return status
    except AnyshapeError as e:
        sys.stderr.write(f"anyshape: error: {e}\n")
        return 1
    except ModuleNotFoundError as e:  # an optional extra not installed is the user's to fix; any other is a bug
        message = missing_extra(e)
        if message is None:
            raise
        sys.stderr.write(f"anyshape: error: {message}\n")
        return 1
    except (click.exceptions.Exit, typer.Exit) as e:
        return int(e.exit_code)
    except typer_click.NoArgsIsHelpError as e:
        e.show()
        return 0
    except usage_errors as e:
        e.show()
        return int(e.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        sys.stderr.write("anyshape: aborted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("anyshape: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
