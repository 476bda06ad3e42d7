"""``anyshape quickstart``: the whole pipeline on the embedded default model."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app


@app.command("quickstart")
def quickstart_command(
    out: Path = typer.Option(Path("studies/quickstart"), "--out", help="Where to write (the study is replaced on each run)."),
    model: str = typer.Option("minilm", "--model", help="Base model (default: the builtin MiniLM)."),
    trials: int = typer.Option(60, "--trials", help="Search trials."),
    budget: float = typer.Option(0.5, "--budget", help="Latency budget as a fraction of the full model's predicted latency."),
    calibration_shapes: int = typer.Option(10, "--calibration-shapes", help="Whole-model shapes timed to calibrate the predictor here."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (and no stage lines or progress)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars or phase lines (stage lines stay)."),
) -> None:
    """Supernet, latency table, predictor, search, export, extract and verify: end to end on this CPU."""
    from rich.console import Console
    from rich.table import Table

    from nas.quickstart import run_quickstart

    console = Console(stderr=True)

    def say(line: str) -> None:
        if not as_json:
            console.print(f"[bold]>[/bold] {line}")

    result = run_quickstart(out, model=model, trials=trials, budget_fraction=budget, say=say,
                            calibration_shapes=calibration_shapes, progress=not (as_json or no_progress))
    if as_json:
        import json

        print(json.dumps(result.to_dict(), indent=1, default=str))
        return
    table = Table(title=f"anyshape quickstart: {model} on {result.device} ({result.runtime}, {result.workload})")
    for column in ("", "shape", result.metric, "predicted ms", "measured ms", "speed-up"):
        table.add_column(column)
    table.add_row("full model", "all layers, full width", "1.0000" if result.metric == "cosine" else "-", "-", f"{result.full_latency_ms:.2f}", "1.00x")
    shape = result.best_shape
    table.add_row(
        "best under budget",
        f"layers {shape['layers']}, heads {shape['heads']}, ffn {shape['ffn']}",
        f"{result.best_accuracy:.4f}",
        f"{result.predicted_latency_ms:.2f}",
        f"{result.measured_latency_ms:.2f}",
        f"{result.speedup:.2f}x",
    )
    Console().print(table)
    if result.task_scores:
        tasks = Table(title="human-judged sets: the best shape beside the base model")
        for column in ("set", "metric", "base model", "best shape", "share of base"):
            tasks.add_column(column)
        for name, v in result.task_scores.items():
            tasks.add_row(name, v["metric"], f"{v['base']:.4f}", f"{v['best']:.4f}", f"{v['best'] / v['base']:.0%}" if v["base"] else "-")
        Console().print(tasks)
    if not result.trained:
        Console().print("the supernet is not fine-tuned: anyshape supernet train SUPERNET --out DIR makes every shape better")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    if result.calibration is not None:
        c = result.calibration
        error = result.predicted_latency_ms / result.measured_latency_ms - 1
        Console().print(
            f"prediction vs measurement of the best shape: {error:+.1%} (raw wall-clock time on this machine; the predictor "
            f"was calibrated here on {c['k']} shapes: {c['mape_before']:.1%} error before, {c['mape_after_loo']:.1%} after, "
            "leave-one-out)"
        )
    elif result.measured_latency_ms_table_speed is not None:
        Console().print(
            f"measured at the table's machine speed (its anchor): {result.measured_latency_ms_table_speed:.2f} ms "
            f"vs {result.predicted_latency_ms:.2f} predicted"
        )
    Console().print(
        f"budget {result.budget_ms:g} ms predicted; latency table {result.table}; predictor {result.predictor}\n"
        f"{result.pareto_configs} Pareto configs in {result.out / 'pareto'}; checkpoint of the best in {result.out / 'best'}\n"
        f"time: {timing}\n"
        f"open the study: anyshape dashboard --storage sqlite:///{result.out / 'study' / 'study.db'}"
    )
