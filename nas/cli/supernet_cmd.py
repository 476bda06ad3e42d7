"""``anyshape supernet build MODEL --out DIR``: calibrate a base model once into a supernet."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json

supernet_app = typer.Typer(help="Build supernets: layer sets for every depth and importance-ordered widths.", no_args_is_help=True)
app.add_typer(supernet_app, name="supernet")


@supernet_app.command("build")
def build_command(
    model: str = typer.Argument(..., help="Base model: directory, builtin alias (minilm, ref-decoder) or hub id."),
    out: Path = typer.Option(..., "--out", help="Supernet directory to write; it must not exist (or pass --overwrite)."),
    min_depth: int = typer.Option(1, "--min-depth", help="Smallest depth in the depth table (1..layers)."),
    depth_method: str = typer.Option("dp", "--depth-method", help="dp | drop-last | block-influence: the table depth shapes use."),
    beam: int = typer.Option(1, "--beam", help="DP sets kept per cell: 1 = AmoebaLLM's greedy recurrence, k > 1 searches more."),
    baselines: bool = typer.Option(False, "--baselines", help="Also store drop-last and block-influence tables."),
    width_method: str = typer.Option("fluctuation", "--width-method", help="fluctuation (FLAP) | magnitude | random."),
    bias_compensation: bool = typer.Option(False, "--bias-compensation", help="FLAP bias compensation (bert, llama)."),
    calib_text: Path | None = typer.Option(None, "--calib-text", help="Calibration text file (paragraphs) instead of the builtin corpus."),
    calib_dataset: str | None = typer.Option(None, "--calib-dataset", help="Hugging Face dataset NAME[:CONFIG] (needs `datasets` and network)."),
    num_calib: int = typer.Option(32, "--num-calib", help="Calibration sequences (decoders) or sentences (encoders)."),
    num_heldout: int = typer.Option(32, "--num-heldout", help="Held-out sequences or sentences."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    batch_size: int = typer.Option(16, "--batch-size", help="Rows per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of data sampling and the random width baseline."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (only after success)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Calibrate MODEL once and write a supernet from which any shape can be cut instantly."""
    from nas.api import build_supernet
    from nas.supernet.build import BuildConfig
    from nas.supernet.calibration import CalibrationConfig

    calibration = CalibrationConfig(
        calib_text=None if calib_text is None else str(calib_text), calib_dataset=calib_dataset, num_calib=num_calib,
        num_heldout=num_heldout, seq_len=seq_len, batch_size=batch_size, seed=seed,
    )
    config = BuildConfig(
        min_depth=min_depth, depth_method=depth_method, beam=beam, baselines=baselines, width_method=width_method,
        bias_compensation=bias_compensation, seed=seed, calibration=calibration,
    )
    result = build_supernet(model, out, config, overwrite=overwrite, progress=not no_progress)
    table = result.supernet.depth_tables[result.supernet.default_depth_table]
    if as_json:
        print_json({"out": str(result.out), "seconds": round(result.seconds, 2), "sha256": result.supernet.sha256(),
                    "metric": result.supernet.metric, "depth_table": table.to_dict()})
        return
    typer.echo(f"wrote supernet {result.out} in {result.seconds:.1f} s ({result.supernet.metric}, width {config.width_method})")
    for row in table.rows:
        held = f"  held-out {row['heldout_loss']:.4f}" if "heldout_loss" in row else ""
        typer.echo(f"  depth {row['depth']:>3}: layers {row['layers']}  calib {row['calib_loss']:.4f}{held}")
