"""``anyshape profile`` (measure or estimate a latency table) and ``anyshape tables list``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json

tables_app = typer.Typer(help="Latency tables on disk.", no_args_is_help=True)
app.add_typer(tables_app, name="tables")


@app.command("profile")
def profile_command(
    device: str = typer.Option(..., "--device", help="Device slug: this CPU (cpu-<model>-<N>c, see anyshape device), h100, a5000, jetson-agx-orin-64gb, jetson-orin-nano-8gb."),
    model: str = typer.Option(..., "--model", help="Model dir, alias (minilm, ref-decoder), config.json, or builtin config (qwen2.5-0.5b)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch | onnxruntime"),
    protocol: str = typer.Option("quiet", "--protocol", help="How points are timed: quiet (raw time; GPUs, idle machines), shared-vm (every sample beside a fixed step of the same workload; cloud VMs), or a YAML file (extends: <preset> plus the fields it changes). The presets are profilers/presets/*.yaml."),
    grid: str | None = typer.Option(None, "--grid", help="Grid as inline JSON or a JSON/YAML file (batch, seq_len, context_len, ffn_steps, head_pairs, whole_model_samples, whole_model_ffn_steps, seed, dtype, ...)."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: all CPUs this process may use)."),
    out: Path = typer.Option(Path("latency_tables"), "--out", help="Root folder of the tables."),
    name: str | None = typer.Option(None, "--name", help="Table name (default: the model's name)."),
    estimate: bool = typer.Option(False, "--estimate", help="Write a roofline estimate from published specs instead of measuring (GPUs only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing table."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished run instead of resuming it."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure what every block of a model costs on this device (resumable), or estimate it (--estimate)."""
    grid_config = None
    if grid is not None:
        from profilers.run import grid_from_text

        grid_config = grid_from_text(grid)
    if estimate:
        from profilers.roofline import estimate as estimate_table

        result = estimate_table(model, device, runtime, out, grid=grid_config, name=name, overwrite=overwrite)
    else:
        from profilers.protocol import load_protocol
        from profilers.run import profile

        result = profile(model, device, runtime, out, grid=grid_config, protocol=load_protocol(protocol, threads=threads),
                         name=name, overwrite=overwrite, restart=restart, progress=not no_progress)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"wrote {result.path} ({result.source}): {result.rows} rows"
        + (f", {result.measured_points} measured, {result.resumed_points} resumed, {result.noisy_points} noisy, "
           f"{result.build_seconds:.0f} s" if result.source == "measured" else "")
        + (" — measured under load; rebuild on a quiet machine" if result.under_load else "")
        + (" — noisy host: the machine's speed wandered over the run (meta.json load.note)"
           if result.noisy_host and not result.under_load else "")
    )


@tables_app.command("list")
def tables_list_command(
    root: Path = typer.Option(Path("latency_tables"), "--root", help="Root folder of the tables."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every table with its device, runtime, source (measured | roofline-estimate), rows and date."""
    from profilers.tables import find_tables_root, list_tables

    root = find_tables_root(root)
    tables = list_tables(root)
    if as_json:
        print_json(tables)
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"latency tables under {root}")
    for col in ("device", "runtime", "name", "source", "protocol", "rows", "date", "status"):
        view.add_column(col)
    for t in tables:
        source = t["source"] + (" (under load)" if t.get("under_load") else "") + (" (noisy host)" if t.get("noisy_host") else "")
        view.add_row(t["device"], t["runtime"], t["name"], source, str(t.get("protocol") or "-"), str(t["rows"]), str(t["date"]), t["status"])
    import sys

    Console(width=None if sys.stdout.isatty() else 200).print(view)
