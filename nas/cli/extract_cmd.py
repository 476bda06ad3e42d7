"""``anyshape extract``: a subnet config (or a model and a shape) to a stock checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, parse_shape_arg, print_json
from nas.errors import AnyshapeError


@app.command("extract")
def extract_command(
    config: Path | None = typer.Argument(None, help="Subnet config (YAML or JSON, format anyshape/subnet-v1)."),
    out: Path = typer.Option(..., "--out", help="Directory to write; it must not exist (or pass --overwrite)."),
    model: str | None = typer.Option(None, "--model", help="Base model (path, alias or hub id), with --shape."),
    supernet: Path | None = typer.Option(
        None, "--supernet", help="Supernet directory: its orders pick heads/channels; shape may give depth instead of layers."
    ),
    shape: str | None = typer.Option(None, "--shape", help="Shape as inline JSON or a JSON/YAML file."),
    onnx: bool = typer.Option(False, "--onnx", help="Also write model.onnx and check it against torch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists (only after success)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (and no progress)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No phase lines on stderr (the ONNX export and check)."),
) -> None:
    """Cut a subnet out of its base model into a plain Hugging Face directory."""
    from nas._progress import shown

    with shown(not (as_json or no_progress)):
        _extract(config, out, model, supernet, shape, onnx, overwrite, as_json)


def _extract(config: Path | None, out: Path, model: str | None, supernet: Path | None, shape: str | None, onnx: bool,
             overwrite: bool, as_json: bool) -> None:
    from nas.api import extract_config, extract_shape, extract_supernet_shape

    if config is not None:
        if shape is not None:
            raise AnyshapeError("give either a subnet CONFIG or --shape, not both")
        if supernet is not None:
            raise AnyshapeError("a subnet CONFIG names its supernet itself; --supernet goes with --shape")
        result = extract_config(config, out, model=model, onnx=onnx, overwrite=overwrite)
    elif supernet is not None:
        if shape is None:
            raise AnyshapeError("--supernet needs --shape, e.g. '{\"depth\": 4, \"ffn\": 768}'")
        result = extract_supernet_shape(supernet, parse_shape_arg(shape), out, model=model, onnx=onnx, overwrite=overwrite)
    else:
        if model is None or shape is None:
            raise AnyshapeError("give a subnet CONFIG, or both --model and --shape")
        result = extract_shape(model, parse_shape_arg(shape), out, onnx=onnx, overwrite=overwrite)
    summary = {
        "out": str(result.out),
        "shape": result.shape.to_dict(),
        "parameters": result.num_parameters,
        "base_parameters": result.base_num_parameters,
        "seconds": round(result.seconds, 3),
        "files": result.files,
        "onnx": result.onnx,
    }
    if as_json:
        print_json(summary)
        return
    ratio = result.num_parameters / max(result.base_num_parameters, 1)
    typer.echo(f"wrote {result.out} in {result.seconds:.2f} s: {result.num_parameters:,} parameters ({ratio:.1%} of base)")
    if result.onnx:
        typer.echo(f"  model.onnx: max |onnxruntime - torch| = {result.onnx['max_abs_diff_vs_torch']:.2e}")
