"""``anyshape calibrate`` (fit this machine's correction of a latency predictor) and ``anyshape calibrations list``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json

calibrations_app = typer.Typer(help="This machine's latency calibrations (a per-user cache, never the repository).",
                               no_args_is_help=True)
app.add_typer(calibrations_app, name="calibrations")


@app.command("calibrate")
def calibrate_command(
    device: str = typer.Option(..., "--device", help="This machine's device slug (anyshape device prints it)."),
    runtime: str = typer.Option("torch", "--runtime", help="torch | onnxruntime"),
    model: str = typer.Option(..., "--model", help="Model dir, alias (minilm, ref-decoder), or builtin config (qwen2.5-0.5b)."),
    shapes: int = typer.Option(10, "--shapes", help="Whole-model shapes to time here (K), spread over the predicted latency range."),
    prior: str = typer.Option("table", "--prior", help="table (this device's own) | auto (best of every table and the roofline) | "
                                                       "roofline | a device slug | a table .csv path."),
    workload: list[str] = typer.Option([], "--workload", help="Workload(s) to calibrate, e.g. prefill:b1:s128 (repeatable; default: the prior table's main workload per phase, the one with most whole-model rows; predictions for other workloads say calibrated: false)."),
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables."),
    table: str | None = typer.Option(None, "--table", help="Table name (default: the model's name)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool the shapes are chosen from."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Time K whole-model shapes here and now and correct the predictor to this machine (stored in the user cache)."""
    from nas.predictor.calibration import calibrate
    from nas.workload import Workload

    result = calibrate(device, runtime, model, tables_root=tables, table=table, prior=prior, shapes=shapes,
                       workloads=[Workload.parse(w) for w in workload] or None, seed=seed, progress=progress and not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    record = result.record
    typer.echo(f"calibrated {device}/{runtime}/{record.table} against {record.prior.get('label')} in {record.seconds:.0f} s "
               f"(calibration {record.id}, saved {result.path})")
    for candidate in record.candidates:
        typer.echo(f"  prior candidate {candidate['prior']}: leave-one-out MAPE {candidate['loo_mape']:.1%}")
    typer.echo(f"{'workload':<18} {'K':>3} {'correction':<12} {'scale':>6} {'slope':>6} {'MAPE before':>12} {'MAPE LOO':>9} "
               f"{'<=10% before':>13} {'<=10% LOO':>10}")
    for summary in (w.summary() for w in record.workloads.values()):
        typer.echo(f"{summary['workload']:<18} {summary['k']:>3} {summary['correction']:<12} {summary['scale']:>6.3f} "
                   f"{summary['slope']:>6.3f} {summary['mape_before']:>12.1%} {summary['mape_after_loo']:>9.1%} "
                   f"{summary['within_10pct_before']:>13.0%} {summary['within_10pct_after_loo']:>10.0%}")
    typer.echo("predictor predict, search, verify, quickstart and serve use it on this machine (--no-calibration turns it off)")


@calibrations_app.command("list")
def calibrations_list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines.")) -> None:
    """Every calibration in this user's cache, and whether it applies on this machine."""
    from nas._io import cache_dir
    from nas.predictor.calibration import list_calibrations

    found = list_calibrations()
    if as_json:
        print_json(found)
        return
    if not found:
        typer.echo(f"no calibrations under {cache_dir() / 'calibrations'}; make one with anyshape calibrate --device DEV --model MODEL")
        return
    for entry in found:
        if "device" not in entry:
            typer.echo(f"{entry['path']}: {entry['status']}")
            continue
        typer.echo(f"{entry['device']}/{entry['runtime']}/{entry['table']}  {entry['created']}  {', '.join(entry['workloads'])}  "
                   f"prior {entry['prior']}  [{entry['status']}]")
