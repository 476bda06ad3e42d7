"""The Typer application every command module registers on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
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
    """A shape given on the command line: inline JSON, or a path to a JSON / YAML file."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise AnyshapeError(f"--shape is not valid JSON: {e.msg} at column {e.colno}") from None
    else:
        path = Path(text)
        if not path.is_file():
            raise AnyshapeError(f"--shape must be inline JSON like '{{\"layers\": [0, 2], \"ffn\": 512}}' or a file; {text!r} is neither")
        import yaml

        try:
            data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise AnyshapeError(f"--shape file {path} is not valid JSON/YAML: {str(e).splitlines()[0]}") from None
        if isinstance(data, dict) and "shape" in data and "format" in data:
            data = data["shape"]
    if not isinstance(data, dict):
        raise AnyshapeError("--shape must be a JSON object like {\"layers\": [0, 2], \"ffn\": 512}")
    return data
