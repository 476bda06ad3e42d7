"""``anyshape inspect MODEL``."""

from __future__ import annotations

import typer

from nas.cli._app import app, print_json


@app.command("inspect")
def inspect_command(
    model: str = typer.Argument(..., help="Model directory, builtin alias (minilm) or hub id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show a model's family, sizes, parameter count and shape space."""
    from nas.inspect import inspect_model

    info = inspect_model(model)
    if as_json:
        print_json(info)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['model']}  ({info['family']} {info['kind']})", show_header=False)
    for key in ("path", "architectures", "layers", "heads", "kv_heads", "head_dim", "hidden_size", "ffn_size", "vocab_size"):
        table.add_row(key, str(info[key]))
    table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("weights sha256", info["weights_sha256"])
    space = info["shape_space"]
    table.add_row("depth", f"{space['depth_range'][0]}..{space['depth_range'][1]}")
    heads = space["head_choices"]
    table.add_row("heads (heads, kv_heads)", ", ".join(f"({h},{k})" for h, k in heads[:12]) + (" ..." if len(heads) > 12 else ""))
    table.add_row("heads policy", info["heads_policy"])
    table.add_row("ffn", f"1..{space['ffn_range'][1]} (grid {space['ffn_grid']})")
    Console().print(table)
