"""``anyshape quickstart``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app


@app.command("quickstart")
def quickstart_command(
    out: Path = typer.Option(Path("studies/quickstart"), "--out", help="Where to write (replaced on each run)."),
    model: str = typer.Option("minilm", "--model", help="Base model (default: the builtin MiniLM)."),
) -> None:
    """Run the pipeline end to end on the embedded default model."""
    from rich.console import Console
    from rich.table import Table

    from nas.quickstart import run_quickstart

    console = Console()
    with console.status(f"extracting a subnet of {model} and comparing it with the full model ..."):
        result = run_quickstart(out, model=model)
    ext = result.extraction
    table = Table(title=f"anyshape quickstart: {model} on this CPU")
    for column in ("", "layers", "ffn", "parameters", "cosine to full", "latency ms (p50, b=8)"):
        table.add_column(column)
    info = result.model
    table.add_row("full", str(info["layers"]), str(info["ffn_size"]), f"{info['parameters']:,}", "1.0000", f"{result.full_latency_ms_p50:.1f}")
    table.add_row(
        "subnet",
        str(list(ext.shape.layers or ())),
        str(ext.shape.ffn),
        f"{ext.num_parameters:,}",
        f"{result.cosine_mean:.4f} (min {result.cosine_min:.4f})",
        f"{result.subnet_latency_ms_p50:.1f} ({result.speedup:.2f}x faster)",
    )
    console.print(table)
    console.print(f"subnet checkpoint: {ext.out}  (extracted in {ext.seconds:.1f} s; ONNX max diff {ext.onnx['max_abs_diff_vs_torch']:.1e})" if ext.onnx else f"subnet checkpoint: {ext.out}")
