"""``anyshape profile`` (measure or estimate a latency table) and ``anyshape tables list``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json

tables_app = typer.Typer(help="Latency tables on disk.", no_args_is_help=True)
app.add_typer(tables_app, name="tables")


@app.command("profile")
def profile_command(
    device: str = typer.Option(..., "--device", help="Device slug: this CPU (cpu-<model>-<N>c), h100, a5000, jetson-agx-orin-64gb, jetson-orin-nano-8gb."),
    model: str = typer.Option(..., "--model", help="Model dir, alias (minilm, ref-decoder), config.json, or builtin config (qwen2.5-0.5b)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch | onnxruntime"),
    out: Path = typer.Option(Path("latency_tables"), "--out", help="Root folder of the tables."),
    grid: str | None = typer.Option(None, "--grid", help="Grid as inline JSON or a JSON/YAML file (batch, seq_len, context_len, ffn_steps, head_pairs, whole_model_samples, whole_model_ffn_steps, seed, dtype, ...)."),
    name: str | None = typer.Option(None, "--name", help="Table name (default: the model's name)."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: all CPUs this process may use)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls per point."),
    repeats: int = typer.Option(15, "--repeats", help="Most timed samples per point."),
    max_point_seconds: float = typer.Option(2.0, "--max-point-seconds", help="Stop sampling a point after this (once 5 samples)."),
    min_sample_ms: float = typer.Option(2.0, "--min-sample-ms", help="Fold calls into one sample until it lasts this long (longer samples steadied ONNX Runtime's small decode graphs on a noisy VM)."),
    rounds: int = typer.Option(3, "--rounds", help="Passes over all points; each point keeps its fastest pass (drops bursts of load)."),
    spinning: bool = typer.Option(True, "--spinning/--no-spinning", help="ONNX Runtime: intra-op threads spin between runs (its default); --no-spinning lets the reference probe run beside it."),
    stagger: bool = typer.Option(False, "--stagger/--no-stagger", help="Measure each point's passes one point apart, kept loaded, instead of in whole passes: for ONNX Runtime graphs too big to keep on disk for a later pass."),
    anchor: bool = typer.Option(False, "--anchor/--no-anchor", help="Decode: time a fixed mid-size decode step of the same workload beside every sample and keep the ratio (follows a drift of the machine's memory that the probe does not; ONNX Runtime needs --no-spinning)."),
    anchor_prefill: bool = typer.Option(False, "--anchor-prefill/--no-anchor-prefill", help="Prefill too: time a fixed mid-size prefill step beside every sample and keep the ratio instead of scaling by the probe (for noisy VMs; builds took 1.25-1.3x as long)."),
    pin_cpus: str | None = typer.Option(None, "--pin-cpus", help="Pin to these CPUs, e.g. 0,1 (Linux)."),
    estimate: bool = typer.Option(False, "--estimate", help="Write a roofline estimate from published specs instead of measuring (GPUs only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing table."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished run instead of resuming it."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure what every block of a model costs on this device (resumable), or estimate it (--estimate)."""
    from nas.errors import AnyshapeError

    grid_config = None
    if grid is not None:
        from profilers.run import grid_from_text

        grid_config = grid_from_text(grid)
    if estimate:
        from profilers.roofline import estimate as estimate_table

        result = estimate_table(model, device, runtime, out, grid=grid_config, name=name, overwrite=overwrite)
    else:
        from profilers.protocol import ProtocolConfig
        from profilers.run import profile

        pins = None
        if pin_cpus:
            try:
                pins = tuple(int(c) for c in pin_cpus.split(","))
            except ValueError:
                raise AnyshapeError(f"--pin-cpus must be CPU numbers like 0,1; got {pin_cpus!r}") from None
        fields = dict(warmup=warmup, repeats=repeats, max_point_seconds=max_point_seconds, min_sample_ms=min_sample_ms, rounds=rounds, spinning=spinning, stagger=stagger, anchor=anchor,
                      anchor_prefill=anchor_prefill, pin_cpus=pins)
        if threads is not None:
            fields["threads"] = threads
        protocol = ProtocolConfig(**fields)  # type: ignore[arg-type]
        result = profile(model, device, runtime, out, grid=grid_config, protocol=protocol, name=name,
                         overwrite=overwrite, restart=restart)
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(
        f"wrote {result.path} ({result.source}): {result.rows} rows"
        + (f", {result.measured_points} measured, {result.resumed_points} resumed, {result.noisy_points} noisy, "
           f"{result.build_seconds:.0f} s" if result.source == "measured" else "")
        + (" — measured under load; rebuild on a quiet machine" if result.under_load else "")
        + (" — noisy host: the reference probe wandered (meta.json load.note)"
           if result.noisy_host and not result.under_load else "")
    )


@tables_app.command("list")
def tables_list_command(
    root: Path = typer.Option(Path("latency_tables"), "--root", help="Root folder of the tables."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Every table with its device, runtime, source (measured | roofline-estimate), rows and date."""
    from profilers.tables import list_tables

    tables = list_tables(root)
    if as_json:
        print_json(tables)
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"latency tables under {root}")
    for col in ("device", "runtime", "name", "source", "rows", "date", "status"):
        view.add_column(col)
    for t in tables:
        source = t["source"] + (" (under load)" if t.get("under_load") else "") + (" (noisy host)" if t.get("noisy_host") else "")
        view.add_row(t["device"], t["runtime"], t["name"], source, str(t["rows"]), str(t["date"]), t["status"])
    import sys

    Console(width=None if sys.stdout.isatty() else 200).print(view)
