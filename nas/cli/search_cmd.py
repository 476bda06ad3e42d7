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
    supernet: Path = typer.Argument(..., metavar="SUPERNET", help="Supernet directory (anyshape supernet build)."),
    device: str = typer.Option(..., "--device", help="Device slug whose latency table to use."),
    runtime: str = typer.Option(..., "--runtime", help="torch | onnxruntime"),
    trials: int = typer.Option(..., "--trials", help="Complete trials the study should hold."),
    workload: str = typer.Option("prefill:b1:s128", "--workload", help="prefill:bB:sS or decode:bB:cC"),
    latency_budget_ms: float | None = typer.Option(None, "--latency-budget-ms", help="Constraint: predicted latency <= this."),
    memory_budget_mb: float | None = typer.Option(None, "--memory-budget-mb", help="Constraint: weights + KV cache <= this."),
    memory_objective: bool = typer.Option(False, "--memory-objective", help="Also minimise memory (3 objectives)."),
    storage: str | None = typer.Option(None, "--storage", help="SQLAlchemy URL (default: sqlite:///studies/STUDY/study.db)."),
    study: str | None = typer.Option(None, "--study", help="Study name (default: SUPERNET's folder name + device)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes sharing the study."),
    seed: int = typer.Option(0, "--seed"),
    sampler: str = typer.Option("nsga2", "--sampler", help="nsga2 | tpe"),
    model: str | None = typer.Option(None, "--model", help="Base model, if not where the supernet says."),
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables."),
    table: str | None = typer.Option(None, "--table", help="Table name (default: the base model's name)."),
    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Use this machine's latency calibration (anyshape calibrate) where one applies."),
    metric: str = typer.Option("default", "--metric", help="Accuracy objective: default (encoders: cosine to the base; decoders: perplexity), "
                               "token_accuracy (decoders), pairs:FILE (text1<TAB>text2<TAB>score, Spearman) or labels:FILE "
                               "(label<TAB>text, probe accuracy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search the accuracy / latency Pareto front of a supernet's shapes on a device."""
    from nas.search.run import SearchConfig, run_search
    from nas.workload import Workload

    metric_args = metric_factory_args(metric)
    config = SearchConfig(
        study=study or f"{supernet.absolute().name}-{device}-{runtime}",
        trials=trials,
        factory="nas.search.factory:supernet_problem",
        factory_args={"supernet": str(supernet.absolute()), "model": model, "tables": str(tables.absolute()), "table": table,
                      "calibrated": calibration, **metric_args},
        device=device,
        runtime=runtime,
        workload=Workload.parse(workload),
        storage=storage,
        workers=workers,
        seed=seed,
        sampler=sampler,  # type: ignore[arg-type]
        latency_budget_ms=latency_budget_ms,
        memory_budget_mb=memory_budget_mb,
        memory_objective=memory_objective,
    )
    result = run_search(config, progress=not as_json)
    if as_json:
        print_json({"study": result.study, "storage": result.storage, "complete_trials": result.complete_trials,
                    "new_trials": result.new_trials, "trials_per_minute": round(result.trials_per_minute, 1), "pareto": result.pareto,
                    "calibrated": result.calibrated, "calibration": result.calibration})
        return
    typer.echo(f"study {result.study}: {result.complete_trials} trials ({result.new_trials} new, {result.trials_per_minute:.1f}/min), "
               f"{len(result.pareto)} on the feasible Pareto front"
               + (f" (latency calibrated on this machine, calibration {result.calibration['id']})" if result.calibration else "")
               + f"; export with: anyshape export --study {result.study}"
               + (f" --storage {storage}" if storage else ""))


def metric_factory_args(metric: str) -> dict[str, str]:
    """``--metric`` as factory arguments: none for the default (so older studies resume), the task file's
    absolute path and sha256 for a task (so a study refuses a changed file)."""
    import hashlib

    from nas.supernet.tasks import load_task

    if metric == "default":
        return {}
    if metric in ("cosine", "perplexity", "token_accuracy"):
        return {"metric": metric}
    load_task(metric)  # a bad file fails here, in one line, before any worker starts
    kind, _, path = metric.partition(":")
    file = Path(path).absolute()
    return {"metric": f"{kind}:{file}", "metric_sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


@app.command("verify")
def verify_command(
    config: Path = typer.Argument(..., metavar="CONFIG", help="An exported subnet config."),
    device: str = typer.Option(..., "--device", help="This machine's device slug (verify runs on the device)."),
    runtime: str = typer.Option(..., "--runtime", help="torch | onnxruntime"),
    out: Path | None = typer.Option(None, "--out", help="Keep the extracted checkpoint here (default: a temporary folder)."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage URL (default: the study's SQLite file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Extract a config, measure its real accuracy and latency here, and record them beside the prediction."""
    from nas.verify import verify

    result = verify(config, device, runtime, out=out, storage=storage)
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
