"""``anyshape device``: which device slug this machine is, and which tables and calibrations apply to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nas.cli._app import app, print_json


def device_report(tables_root: Path) -> dict[str, Any]:
    """This machine's slug and CPU, its own tables, the other CPUs' tables it can calibrate from, and its calibrations."""
    from nas._io import cache_dir
    from nas.predictor.calibration import list_calibrations
    from profilers.environment import cpu_slug, device_fingerprint
    from profilers.tables import find_tables_root, list_tables

    tables_root = find_tables_root(tables_root)
    slug = cpu_slug()
    fingerprint = device_fingerprint()
    tables = list_tables(tables_root)
    own = [t for t in tables if t["device"] == slug]
    priors = [t for t in tables if t["device"] != slug and t["device"].startswith("cpu-") and t["status"] == "ok"]
    calibrations = [c for c in list_calibrations() if c.get("status") == "ok"]
    return {
        "device": slug,
        "cpu": {k: fingerprint.get(k) for k in ("cpu_model", "cpu_vendor", "cpu_family", "cpu_model_id", "logical_cores", "l3_cache")},
        "tables_root": str(tables_root),
        "tables": [{k: t[k] for k in ("runtime", "name", "source", "rows", "date", "status")} for t in own],
        "calibration_priors": sorted({f"{t['device']}/{t['runtime']}/{t['name']}" for t in priors}),
        "calibrations": calibrations,
        "cache": str(cache_dir()),
    }


@app.command("device")
def device_command(
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which device slug this machine is, and which latency tables and calibrations apply here."""
    report = device_report(tables)
    if as_json:
        print_json(report)
        return
    cpu = report["cpu"]
    slug = report["device"]
    typer.echo(f"this machine is {slug}: {cpu['cpu_model']} (vendor {cpu['cpu_vendor']}, family {cpu['cpu_family']}, "
               f"model {cpu['cpu_model_id']}), {cpu['logical_cores']} cores")
    if report["tables"]:
        typer.echo(f"its latency tables under {tables}:")
        for t in report["tables"]:
            typer.echo(f"  {slug}/{t['runtime']}/{t['name']}  {t['source']}, {t['rows']} rows, {t['date']}  [{t['status']}]")
    else:
        where = f"no latency tables for {slug} under {tables}" if Path(tables).is_dir() else f"no tables folder {tables}"
        typer.echo(f"{where}: profile this machine with anyshape profile --device {slug} --model MODEL, or calibrate "
                   f"from another CPU's table in about a minute: anyshape calibrate --device {slug} --model MODEL --prior auto")
    if report["calibration_priors"]:
        typer.echo(f"tables of other CPUs that calibrate can start from: {', '.join(report['calibration_priors'])}")
    if report["calibrations"]:
        typer.echo(f"calibrations of this machine (in {report['cache']}):")
        for c in report["calibrations"]:
            typer.echo(f"  {c['device']}/{c['runtime']}/{c['table']}  {c['created']}  {', '.join(c['workloads'])}  prior {c['prior']}")
    else:
        typer.echo(f"no calibrations of this machine in {report['cache']}: predictions use the tables as measured elsewhere "
                   f"(anyshape calibrate --device {slug} --model MODEL corrects them to this machine)")
