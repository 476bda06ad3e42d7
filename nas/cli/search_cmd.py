"""``anyshape search`` and ``anyshape export``: the Optuna study over a supernet and its Pareto front."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json


@app.command("export")
def export_command(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage URL (default: sqlite:///studies/STUDY/study.db)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the configs (default: studies/STUDY/)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write pareto.png and pareto.html."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one subnet config per feasible Pareto trial, pareto.csv and a plot of the front."""
    from nas.search.export import export_study

    url = storage or f"sqlite:///{Path('studies').absolute() / study / 'study.db'}"
    result = export_study(url, study, out or Path("studies") / study, plot=plot)
    if as_json:
        print_json({"out": str(result.out), "configs": [str(p) for p in result.configs], "csv": str(result.csv), "plots": [str(p) for p in result.plots]})
        return
    typer.echo(f"exported {len(result.configs)} Pareto configs to {result.out} (pareto.csv{', pareto.png, pareto.html' if result.plots else ''})")


@app.command("search")
def search_command(
    supernet: Path | None = typer.Argument(None, metavar="SUPERNET", help="Supernet directory (anyshape supernet build); or --config."),
    config_file: Path | None = typer.Option(None, "--config", help="Study file (YAML, studies/*.yaml) holding the options below."),
    device: str | None = typer.Option(None, "--device", help="Device slug whose latency table to use."),
    runtime: str | None = typer.Option(None, "--runtime", help="torch | onnxruntime"),
    trials: int | None = typer.Option(None, "--trials", help="Complete trials the study should hold."),
    workload: str = typer.Option("prefill:b1:s128", "--workload", help="prefill:bB:sS or decode:bB:cC"),
    latency_budget_ms: float | None = typer.Option(None, "--latency-budget-ms", help="Constraint: predicted latency <= this."),
    memory_budget_mb: float | None = typer.Option(None, "--memory-budget-mb", help="Constraint: weights + KV cache <= this."),
    memory_objective: bool = typer.Option(False, "--memory-objective", help="Also minimise memory (3 objectives)."),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL (default: sqlite:///studies/STUDY/study.db)."),
    study: str | None = typer.Option(None, "--study", help="Study name (default: SUPERNET's folder name + device)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes sharing the study (default 1)."),
    seed: int = typer.Option(0, "--seed"),
    sampler: str = typer.Option("nsga2", "--sampler", help="nsga2 | tpe"),
    model: str | None = typer.Option(None, "--model", help="Base model, if not where the supernet says."),
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables."),
    table: str | None = typer.Option(None, "--table", help="Table name (default: the base model's name)."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Use this machine's latency calibration (anyshape calibrate) where one applies."),
    metric: str = typer.Option("default", "--metric", help="Accuracy objective: default (encoders: cosine to the base; decoders: perplexity), "
                               "token_accuracy (decoders), pairs:FILE (text1<TAB>text2<TAB>score, Spearman) or labels:FILE "
                               "(label<TAB>text, probe accuracy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (and no progress)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars or phase lines on stderr."),
) -> None:
    """Search the accuracy / latency Pareto front of a supernet's shapes on a device (flags, or a study file)."""
    from nas.errors import AnyshapeError
    from nas.search.run import run_search
    from nas.search.studies import load_study_file, supernet_search_config

    if config_file is not None:
        given = [name for name, value in (("SUPERNET", supernet), ("--device", device), ("--runtime", runtime), ("--trials", trials),
                                          ("--study", study), ("--model", model), ("--table", table),
                                          ("--latency-budget-ms", latency_budget_ms), ("--memory-budget-mb", memory_budget_mb))
                 if value is not None]
        if given:
            raise AnyshapeError(f"--config holds the search; drop {', '.join(given)} (only --storage and --workers override a study file)")
        config = load_study_file(config_file, storage=storage, workers=workers).config
    else:
        missing = [name for name, value in (("SUPERNET", supernet), ("--device", device), ("--runtime", runtime), ("--trials", trials))
                   if value is None]
        if missing:
            raise AnyshapeError(f"give {', '.join(missing)} (or a study file with --config)")
        assert supernet is not None and device is not None and runtime is not None and trials is not None
        config = supernet_search_config(
            supernet=supernet, device=device, runtime=runtime, trials=trials, study=study, model=model, tables=tables, table=table,
            calibration=calibration, metric=metric, workload=workload, storage=storage, workers=workers or 1, seed=seed,
            sampler=sampler, latency_budget_ms=latency_budget_ms, memory_budget_mb=memory_budget_mb, memory_objective=memory_objective,
        )
    result = run_search(config, progress=not (as_json or no_progress))
    if as_json:
        print_json({"study": result.study, "storage": result.storage, "complete_trials": result.complete_trials,
                    "new_trials": result.new_trials, "trials_per_minute": round(result.trials_per_minute, 1), "pareto": result.pareto,
                    "calibrated": result.calibrated, "calibration": result.calibration})
        return
    typer.echo(f"study {result.study}: {result.complete_trials} trials ({result.new_trials} new, {result.trials_per_minute:.1f}/min), "
               f"{len(result.pareto)} on the feasible Pareto front"
               + (f" (latency calibrated on this machine, calibration {result.calibration['id']})" if result.calibration else "")
               + f"; export with: anyshape export --study {result.study}"
               + (f" --storage {config.storage}" if config.storage else ""))


@app.command("batch")
def batch_command(
    files: list[Path] = typer.Argument(..., metavar="STUDY_FILE...", help="Study files (YAML), e.g. studies/*.yaml."),
    workers: int = typer.Option(1, "--workers", help="Study files searched at once, one process each."),
    storage: str | None = typer.Option(None, "--storage", help="One storage for every study (postgresql://... for several hosts); "
                                       "default: each file's storage, else its studies/STUDY/study.db."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON (and no progress)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar on stderr."),
) -> None:
    """Run many study files on N workers; re-running a stopped batch resumes every study. Prints one summary table."""
    import dataclasses
    import time

    from nas.search.studies import batch_table, run_batch

    start = time.perf_counter()
    rows = run_batch(files, workers=workers, storage=storage, progress=not (as_json or no_progress))
    failed = [r for r in rows if r.error]
    if as_json:
        print_json({"seconds": round(time.perf_counter() - start, 1), "rows": [dataclasses.asdict(r) for r in rows]})
    else:
        typer.echo(batch_table(rows))
        typer.echo(f"{len(rows)} studies in {time.perf_counter() - start:.1f} s on {workers} worker(s); "
                   f"{len(rows) - len(failed)} complete, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@app.command("verify")
def verify_command(
    config: Path = typer.Argument(..., metavar="CONFIG", help="An exported subnet config."),
    device: str = typer.Option(..., "--device", help="This machine's device slug (verify runs on the device)."),
    runtime: str = typer.Option(..., "--runtime", help="torch | onnxruntime"),
    out: Path | None = typer.Option(None, "--out", help="Keep the extracted checkpoint here (default: a temporary folder)."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage URL (default: the study's SQLite file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (and no progress)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No phase lines on stderr."),
) -> None:
    """Extract a config, measure its real accuracy and latency here, and record them beside the prediction."""
    from nas.verify import verify

    result = verify(config, device, runtime, out=out, storage=storage, progress=not (as_json or no_progress))
    if as_json:
        print_json({k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()} | {"latency_error": result.latency_error})
        return
    calibrated = ", calibrated on this machine" if result.calibrated else ""
    predicted = f"{result.predicted_latency_ms:.4g} ms predicted ({result.latency_source}{calibrated}), " if result.predicted_latency_ms else ""
    error = f" ({result.latency_error:+.1%})" if result.latency_error is not None else ""
    typer.echo(f"{result.config.name}: {result.metric} {result.measured_accuracy:.4g} measured"
               + (f" (search: {result.predicted_accuracy:.4g})" if result.predicted_accuracy is not None else "")
               + f"; latency {predicted}{result.measured_latency_ms:.4g} ms measured{error} for {result.workload}"
               + (f"; {result.measured_latency_ms_table_speed:.4g} ms at the table's machine speed ({result.table_speed_error:+.1%})"
                  if result.measured_latency_ms_table_speed and result.table_speed_error is not None else ""))
