"""The library functions behind the CLI commands, callable from Python with the same names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.config import BaseModelRef, SubnetConfig
from nas.errors import AnyshapeError
from nas.extract import ExtractResult, extract
from nas.hub import ModelSource, resolve_model, weights_sha256
from nas.shape import Shape


def extract_shape(
    model: str, shape: Mapping[str, Any] | Shape, out: str | Path, *, onnx: bool = False, overwrite: bool = False
) -> ExtractResult:
    """``anyshape extract --model MODEL --shape SHAPE --out OUT``."""
    source = resolve_model(model)
    shape = shape if isinstance(shape, Shape) else Shape.from_dict(shape)
    return extract(source, shape, out, onnx=onnx, overwrite=overwrite)


def extract_config(
    config_path: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    onnx: bool = False,
    overwrite: bool = False,
) -> ExtractResult:
    """``anyshape extract CONFIG --out OUT``: refuses a base model whose weights differ from the config's sha256."""
    config_path = Path(config_path)
    config = SubnetConfig.load(config_path)
    source = resolve_base(config.base_model, config_path.parent, override=model)
    sha = verify_base(source, config.base_model)
    if config.supernet is not None:
        from nas.supernet.cut import extract_from_supernet

        supernet_dir = _relative(config.supernet.path, config_path.parent)
        return extract_from_supernet(
            supernet_dir, config.shape, out, model=str(source.path) if model is None else model, config=config,
            onnx=onnx, overwrite=overwrite,
        )
    return extract(source, config.shape, out, config=config, onnx=onnx, overwrite=overwrite, base_sha256=sha)


def extract_supernet_shape(
    supernet: str | Path,
    shape: Mapping[str, Any] | Shape,
    out: str | Path,
    *,
    model: str | None = None,
    onnx: bool = False,
    overwrite: bool = False,
) -> ExtractResult:
    """``anyshape extract --supernet DIR --shape SHAPE --out OUT``: ``depth`` or ``layers``; the supernet's orders."""
    from nas.supernet.cut import extract_from_supernet

    return extract_from_supernet(supernet, shape, out, model=model, onnx=onnx, overwrite=overwrite)


def build_supernet(model: str, out: str | Path, config: Any = None, *, overwrite: bool = False, progress: bool = True) -> Any:
    """``anyshape supernet build MODEL --out DIR`` (see :func:`nas.supernet.build.build_supernet`)."""
    from nas.supernet.build import build_supernet as build

    return build(model, out, config, overwrite=overwrite, progress=progress)


def _relative(path: str, relative_to: Path) -> Path:
    candidate = relative_to / path
    return candidate if not Path(path).is_absolute() and not Path(path).exists() and candidate.is_dir() else Path(path)


def resolve_base(ref: BaseModelRef, relative_to: Path, *, override: str | None = None) -> ModelSource:
    """The config's base model; a relative path is tried against the config's folder too."""
    if override is not None:
        return resolve_model(override)
    candidate = relative_to / ref.source
    if not Path(ref.source).is_absolute() and not Path(ref.source).exists() and candidate.is_dir():
        return resolve_model(str(candidate))
    return resolve_model(ref.source)


def verify_base(source: ModelSource, ref: BaseModelRef) -> str:
    """The base weights' sha256, checked against the config's when it has one."""
    sha = weights_sha256(source.path)
    if ref.sha256 is not None and ref.sha256.lower() != sha:
        raise AnyshapeError(
            f"base model {source.spec} has weights sha256 {sha[:12]}..., the config expects {ref.sha256[:12]}...; "
            "this config was made for other weights"
        )
    return sha
