"""``anyshape dashboard``: optuna-dashboard on a study, its best trials the feasible Pareto front."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app


@app.command("dashboard")
def dashboard_command(
    study: str | None = typer.Argument(None, help="Study name: opens sqlite:///studies/STUDY/study.db (or give --storage)."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage URL (SQLite file or postgresql://...)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free one)."),
) -> None:
    """Open the studies of a storage in optuna-dashboard; infeasible trials are never listed as best."""
    import importlib

    from nas.errors import AnyshapeError
    from nas.search.dashboard import serve_dashboard

    importlib.import_module("optuna_dashboard")  # a missing [dashboard] extra fails here, before anything is said
    if storage is None:
        if study is None:
            raise AnyshapeError("give a study name (its studies/STUDY/study.db) or --storage URL")
        storage = f"sqlite:///{Path('studies').absolute() / study / 'study.db'}"
    safe = storage.split("@")[-1]

    def ready(url: str) -> None:
        typer.echo(f"optuna-dashboard on {url} for {safe} (best trials: the feasible Pareto front); Ctrl-C stops it", err=True)

    serve_dashboard(storage, host, port, ready=ready)
