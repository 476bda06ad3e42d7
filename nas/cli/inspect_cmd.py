"""``anyshape inspect MODEL``."""

from __future__ import annotations

from typing import Any

import typer

from nas.cli._app import app, print_json


@app.command("inspect")
def inspect_command(
    model: str = typer.Argument(..., help="Model directory, builtin alias (minilm) or hub id, or a supernet directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show a model's family, sizes, parameter count and shape space."""
    from nas.inspect import inspect_model

    info = inspect_model(model)
    if as_json:
        print_json(info)
        return
    if info.get("kind") == "supernet":
        _print_supernet(info)
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


def _print_supernet(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = Table(title=f"supernet {info['path']}", show_header=False)
    for key in ("base_model", "base_sha256", "family", "metric", "width_method", "bias_compensation", "sha256"):
        head.add_row(key, str(info[key]))
    cal = info["calibration"]
    head.add_row("calibration", f"{cal['corpus']}: {cal['num_calib']} calib / {cal['num_heldout']} held-out, seq {cal['seq_len']}, "
                 f"seed {cal['seed']}, sha256 {cal['calib_sha256'][:12]}...")
    console.print(head)
    for name, table in info["depth_tables"].items():
        rows = Table(title=f"depth table {name}{' (default)' if name == info['default_depth_table'] else ''}")
        for col in ("depth", "layers", f"calib {info['metric']}", f"held-out {info['metric']}"):
            rows.add_column(col)
        for row in table["rows"]:
            held = row.get("heldout_loss")
            rows.add_row(str(row["depth"]), str(row["layers"]), f"{row['calib_loss']:.4f}", "" if held is None else f"{held:.4f}")
        console.print(rows)
    orders = Table(title="width orders (most important first; any width is a prefix)")
    for col in ("layer", "heads", "kv_heads", "ffn (first 12)"):
        orders.add_column(col)
    for i, (h, k, f) in enumerate(zip(info["orders"]["heads"], info["orders"]["kv_heads"], info["orders"]["ffn"])):
        orders.add_row(str(i), str(h), str(k), str(f[:12]) + " ...")
    console.print(orders)
