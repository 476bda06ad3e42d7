"""The Typer application every command module registers on."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from nas.errors import AnyshapeError

app = typer.Typer(
    name="anyshape",
    help="Hardware-aware architecture search over any-shape LLM supernets: extract, profile, predict, search, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def parse_shape_arg(text: str) -> dict[str, Any]:
    """A shape given on the command line: inline JSON, or a path to a JSON / YAML file (or a subnet config)."""
    from nas._io import load_mapping_arg

    data = load_mapping_arg(text, "--shape", '{"layers": [0, 2], "ffn": 512}')
    if isinstance(data, dict) and "shape" in data and "format" in data:
        data = data["shape"]
    if not isinstance(data, dict):
        raise AnyshapeError("--shape must be a JSON object like {\"layers\": [0, 2], \"ffn\": 512}")
    return data
