"""``anyshape serve``: the HTTP service (recommend a shape, list studies and tables, run searches)."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    studies: Path = typer.Option(Path("studies"), "--studies", help="Folder whose */study.db and */*/study.db are listed."),
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables."),
    storage: list[str] = typer.Option([], "--storage", help="Extra study storage URL to list and recommend from (repeatable)."),
    search_storage: str | None = typer.Option(None, "--search-storage", help="Storage for submitted runs' studies (default: studies/STUDY/study.db)."),
    db: str | None = typer.Option(None, "--db", help="Database of the run queue (default: sqlite:///studies/service.db)."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the API token (default: $ANYSHAPE_API_TOKEN)."),
    read_only: bool = typer.Option(False, "--read-only", help="Serve reads only; start without a token."),
    auth_reads: bool = typer.Option(False, "--auth-reads", help="Reads need the token too."),
    workers: int = typer.Option(1, "--workers", help="Worker processes running queued searches (0: none)."),
    max_trials: int = typer.Option(5000, "--max-trials", help="Most trials one run may ask for."),
    max_body_bytes: int = typer.Option(64 * 1024, "--max-body-bytes", help="Largest request body accepted."),
    heartbeat_s: float = typer.Option(5.0, "--heartbeat-s", help="Seconds between a worker's heartbeats."),
    stale_after_s: float = typer.Option(30.0, "--stale-after-s", help="A run whose worker is silent this long is re-queued."),
) -> None:
    """Run the HTTP API (OpenAPI at /docs and /openapi.json); writes need a bearer token."""
    import importlib

    from nas.service import ServiceSettings, read_token, serve

    for module in ("fastapi", "uvicorn"):  # a missing [service] extra fails here, before anything is said or started
        importlib.import_module(module)
    settings = ServiceSettings(
        host=host, port=port, studies_dir=str(studies.absolute()), tables_root=str(tables.absolute()), storages=tuple(storage),
        search_storage=search_storage, db=db, token=None if read_only else read_token(token_file), read_only=read_only,
        auth_reads=auth_reads, workers=workers, max_trials=max_trials, max_body_bytes=max_body_bytes,
        heartbeat_s=heartbeat_s, stale_after_s=stale_after_s,
    )
    mode = "read-only (no API token): writes are refused" if not settings.writable else "writes need the bearer token"
    typer.echo(f"anyshape serve on http://{host}:{port} ({mode}); runs database {settings.db_url.split('@')[-1]}; "
               f"{workers} worker(s); OpenAPI at /docs", err=True)
    serve(settings)
