"""The ready-to-extract subnet config (``format: anyshape/subnet-v1``), in YAML or JSON.

    format: anyshape/subnet-v1
    base_model: {source: minilm, sha256: 3c1f...}
    supernet:   {path: studies/minilm/supernet, sha256: 9a0b...}   # optional
    shape:      {layers: [0, 1, 3, 5], heads: 12, ffn: 768}
    objectives: {...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._io import write_text_atomic
from nas.errors import AnyshapeError
from nas.shape import Shape

FORMAT = "anyshape/subnet-v1"


@dataclass(frozen=True)
class BaseModelRef:
    source: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise AnyshapeError("base_model.source must be a non-empty string (a path, hub id or builtin alias)")
        if self.sha256 is not None and not _is_sha256(self.sha256):
            raise AnyshapeError(f"base_model.sha256 must be 64 hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class SupernetRef:
    path: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:  # loaded files are untyped
            raise AnyshapeError("supernet.path must be a non-empty string")
        if self.sha256 is not None and not _is_sha256(self.sha256):
            raise AnyshapeError(f"supernet.sha256 must be 64 hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class SubnetConfig:
    """One subnet of one base model, ready for ``anyshape extract``."""

    base_model: BaseModelRef
    shape: Shape
    supernet: SupernetRef | None = None
    objectives: Mapping[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise AnyshapeError(f"format is {self.format!r}; this version of anyshape reads {FORMAT!r}")
        if not isinstance(self.objectives, Mapping):
            raise AnyshapeError("objectives must be a mapping")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "base_model": {"source": self.base_model.source}}
        if self.base_model.sha256:
            out["base_model"]["sha256"] = self.base_model.sha256
        if self.supernet is not None:
            out["supernet"] = {"path": self.supernet.path}
            if self.supernet.sha256:
                out["supernet"]["sha256"] = self.supernet.sha256
        out["shape"] = self.shape.to_dict()
        out["objectives"] = dict(self.objectives)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> SubnetConfig:
        if not isinstance(data, Mapping):
            raise AnyshapeError("a subnet config must be a mapping with format, base_model and shape")
        unknown = sorted(set(data) - {"format", "base_model", "supernet", "shape", "objectives"})
        if unknown:
            raise AnyshapeError(f"subnet config has unknown field(s) {unknown}")
        if "format" not in data:
            raise AnyshapeError(f"subnet config has no 'format'; expected {FORMAT!r}")
        for key in ("base_model", "shape"):
            if not isinstance(data.get(key), Mapping):
                raise AnyshapeError(f"subnet config field {key!r} is missing or not a mapping")
        base = data["base_model"]
        supernet = data.get("supernet")
        if supernet is not None and not isinstance(supernet, Mapping):
            raise AnyshapeError("subnet config field 'supernet' must be a mapping with path and sha256")
        return cls(
            format=data["format"],
            base_model=BaseModelRef(source=base.get("source", ""), sha256=base.get("sha256")),
            supernet=None if supernet is None else SupernetRef(path=supernet.get("path", ""), sha256=supernet.get("sha256")),
            shape=Shape.from_dict(data["shape"]),
            objectives=data.get("objectives") or {},
        )

    def dumps(self, fmt: str = "yaml") -> str:
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        import yaml

        return str(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically; ``.json`` gives JSON, anything else YAML."""
        path = Path(path)
        return write_text_atomic(path, self.dumps("json" if path.suffix == ".json" else "yaml"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SubnetConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise AnyshapeError(f"subnet config {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise AnyshapeError(f"cannot read subnet config {path}: {e}") from None
        return cls.from_dict(_parse(text, path))


def _parse(text: str, path: Path) -> Any:
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise AnyshapeError(f"{path} is not valid JSON: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise AnyshapeError(f"{path} is not valid YAML: {first}") from None


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())
