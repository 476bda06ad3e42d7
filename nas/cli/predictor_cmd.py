"""``anyshape predictor fit|predict|eval``: learned latency predictors over latency tables."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, parse_shape_arg, print_json

predictor_app = typer.Typer(help="Learned latency predictors fit on latency tables.", no_args_is_help=True)
app.add_typer(predictor_app, name="predictor")

DEVICE = typer.Option(..., "--device", help="Device slug, e.g. cpu-amd-epyc-zen4-2c, a5000.")
RUNTIME = typer.Option(..., "--runtime", help="torch | onnxruntime")
MODEL = typer.Option(..., "--model", help="Model whose table to use (alias, path or builtin profiling config).")
TABLES = typer.Option(Path("latency_tables"), "--tables", help="Root folder of the latency tables.")
TABLE = typer.Option(None, "--table", help="Table name (default: the model's name).")


@predictor_app.command("fit")
def fit_command(device: str = DEVICE, runtime: str = RUNTIME, model: str = MODEL, tables: Path = TABLES,
                table: str | None = TABLE, seed: int = typer.Option(0, "--seed"),
                holdout: float = typer.Option(0.4, "--holdout", help="Share of whole-model rows kept out of the fit for `predictor eval` (0 to fit on all)."),
                as_json: bool = typer.Option(False, "--json")) -> None:  # fmt: skip
    """Fit (or refit) the predictor on a table's whole-model rows and save it beside the table."""
    from nas.errors import AnyshapeError
    from nas.predictor.api import predictor_for, predictor_path

    if not 0.0 <= holdout < 1.0:
        raise AnyshapeError(f"--holdout is {holdout}; allowed range [0, 1) (the share of whole-model rows kept out of the fit)")
    predictor, spec = predictor_for(device, runtime, model, tables_root=tables, table=table, refit=True, seed=seed,
                                    holdout_fraction=holdout)
    path = predictor_path(tables, device, runtime, table or spec.name)
    if as_json:
        print_json({"path": str(path), "chosen": predictor.chosen, "cv_mape": predictor.cv_mape, "source": predictor.source})
        return
    scores = ", ".join(f"{k} {v:.2%}" for k, v in predictor.cv_mape.items())
    typer.echo(f"fit {predictor.chosen} on {predictor.label} (cross-validated MAPE: {scores}); saved {path}")


@predictor_app.command("predict")
def predict_command(device: str = DEVICE, runtime: str = RUNTIME, model: str = MODEL,
                    shape: str = typer.Option(..., "--shape", help="Shape JSON (layers or depth, heads, kv_heads, ffn)."),
                    phase: str = typer.Option("prefill", "--phase", help="prefill | decode"),
                    batch: int = typer.Option(1, "--batch"),
                    seq_len: int = typer.Option(128, "--seq-len", help="Prompt length (prefill) or context length (decode)."),
                    tables: Path = TABLES, table: str | None = TABLE,
                    calibration: bool = typer.Option(True, "--calibration/--no-calibration", help="Use this machine's calibration (anyshape calibrate) where one applies."),
                    calibration_file: Path | None = typer.Option(None, "--calibration-file", help="Use this calibration record (refused if it is another machine's)."),
                    as_json: bool = typer.Option(False, "--json")) -> None:  # fmt: skip
    """Predict the latency of one shape for one workload (fits the predictor on first use)."""
    from nas.predictor.api import predict_latency
    from nas.workload import Workload

    result = predict_latency(device, runtime, model, parse_shape_arg(shape), Workload(phase, batch, seq_len), tables_root=tables,  # type: ignore[arg-type]
                             table=table, calibrated=calibration, calibration=calibration_file)
    if as_json:
        print_json(result)
        return
    from profilers.environment import cpu_slug

    here = device == cpu_slug()
    state = "" if result["calibrated"] else ("; not calibrated to this machine: anyshape calibrate" if here
                                             else "; not calibrated: anyshape calibrate runs on the device itself")
    typer.echo(f"{result['latency_ms']:.4g} ms for {result['workload']} ({result['table']}{state})")
    if result["flag"]:
        typer.echo(f"warning: {result['flag']}", err=True)


@predictor_app.command("eval")
def eval_command(device: str = DEVICE, runtime: str = RUNTIME, model: str = MODEL, tables: Path = TABLES,
                 table: str | None = TABLE, as_json: bool = typer.Option(False, "--json")) -> None:  # fmt: skip
    """Score the predictor on held-out measured whole-model shapes, beside three baselines."""
    from nas.predictor.api import predictor_for
    from nas.predictor.evaluate import evaluate_predictor

    predictor, _ = predictor_for(device, runtime, model, tables_root=tables, table=table)
    report = evaluate_predictor(predictor)
    if as_json:
        print_json(report)
        return
    typer.echo(f"{report['table']}: chosen {report['chosen']}")
    typer.echo(f"{'workload':<18} {'method':<13} {'n':>4} {'RMSE ms':>9} {'MAPE':>7} {'<=5%':>6} {'<=10%':>6} {'tau':>6}")
    for name, entry in report["workloads"].items():
        for method in ("learned", "lut_sum", "roofline", "flops_linear"):
            if method in entry:
                m = entry[method]
                typer.echo(f"{name:<18} {method:<13} {m['n']:>4} {m['rmse_ms']:>9.4g} {m['mape']:>7.2%} {m['within_5pct']:>6.1%} {m['within_10pct']:>6.1%} {m['kendall_tau']:>6.3f}")
