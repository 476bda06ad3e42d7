"""Physical extraction: slice a base checkpoint's tensors into a stock, smaller checkpoint.

Extraction works on the state dict, not on modules: each weight file is memory-mapped,
each kept layer's tensors are sliced along the rows or columns the shape keeps (reading
only those bytes when they are contiguous), dropped layers are never read, and the result
is written as one ``model.safetensors`` with a smaller ``config.json`` of the same class.
So extraction costs about what copying the kept bytes costs, and needs no model instance.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas import __version__
from nas._io import atomic_directory, check_output_dir
from nas._safetensors import save_safetensors
from nas.config import BaseModelRef, SubnetConfig
from nas.cuts import LayerCut, WidthOrders, plan_cuts
from nas.errors import AnyshapeError
from nas.families import ModelFamily, family_for
from nas.hub import WEIGHT_SUFFIXES, ModelSource, resolve_model, weight_files, weights_sha256
from nas.shape import Shape, ShapeSpace

PROVENANCE_FILE = "anyshape_subnet.json"
_SKIP_FILES = {"config.json", "README.md", ".gitattributes", PROVENANCE_FILE}


@dataclass
class ExtractResult:
    """What an extraction wrote."""

    out: Path
    shape: Shape
    cuts: list[LayerCut]
    num_parameters: int
    base_num_parameters: int
    seconds: float
    onnx: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)


def extract(
    model: str | ModelSource,
    shape: Shape,
    out: str | Path,
    *,
    orders: WidthOrders | None = None,
    edits: Mapping[str, torch.Tensor] | None = None,
    config: SubnetConfig | None = None,
    onnx: bool = False,
    overwrite: bool = False,
    base_sha256: str | None = None,
) -> ExtractResult:
    """Cut ``shape`` out of ``model`` into a stock Hugging Face directory at ``out``.

    ``orders`` picks which heads and channels are kept (default: the first ones);
    ``edits`` replaces base tensors (by base key) before slicing, e.g. merged adapters.
    The directory appears only when everything, ONNX included, has succeeded.
    """
    start = time.perf_counter()
    check_output_dir(out, overwrite=overwrite)
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    base_config = source.config_dict()
    family = family_for(base_config)
    space = family.space(base_config)
    resolved = shape.resolve(space)
    if orders is not None:
        orders.validate(space)
    cuts = plan_cuts(space, resolved, orders)
    sha = base_sha256 or weights_sha256(source.path)
    if config is None:
        config = SubnetConfig(base_model=BaseModelRef(source.spec, sha), shape=resolved)

    with atomic_directory(out, overwrite=overwrite) as tmp:
        tensors = slice_state_dict(source.path, family, space, cuts, edits=edits)
        save_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        sub_config = family.sub_config(base_config, resolved)
        layer_types = family.layer_types(base_config)
        if layer_types:
            sub_config["layer_types"] = [layer_types[i] for i in resolved.layers or ()]
        _copy_aux_files(source.path, tmp)
        write_config(sub_config, tmp)
        num_params = sum(t.numel() for k, t in tensors.items() if not k.endswith("position_ids"))
        base_params = count_parameters(source.path)
        onnx_info = None
        if onnx:
            from nas.onnx_export import export_onnx

            onnx_info = export_onnx(tmp, family, tmp / "model.onnx")
        provenance = {
            "format": "anyshape/extracted-v1",
            "anyshape_version": __version__,
            "config": config.to_dict(),
            "family": family.name,
            "base_model": {"source": source.spec, "path": str(source.path), "sha256": sha},
            "shape": resolved.to_dict(),
            "num_parameters": num_params,
            "base_num_parameters": base_params,
            "layers": [cut.to_dict() for cut in cuts],
            "onnx": onnx_info,
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
        (tmp / "README.md").write_text(model_card(source, family, resolved, num_params, base_params, tmp))
        files = sorted(p.name for p in tmp.iterdir())
    return ExtractResult(
        out=Path(out).absolute(),
        shape=resolved,
        cuts=cuts,
        num_parameters=num_params,
        base_num_parameters=base_params,
        seconds=time.perf_counter() - start,
        onnx=onnx_info,
        files=files,
    )


def slice_state_dict(
    path: Path,
    family: ModelFamily,
    space: ShapeSpace,
    cuts: list[LayerCut],
    *,
    edits: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The subnet's state dict: kept layers renumbered and sliced, everything else copied."""
    new_index = {cut.layer: i for i, cut in enumerate(cuts)}
    by_layer = {cut.layer: cut for cut in cuts}
    edits = edits or {}
    out: dict[str, torch.Tensor] = {}
    seen_layer_keys = False
    seen_keys: set[str] = set()
    for key, reader in _tensor_readers(path):
        seen_keys.add(key)
        m = family.layer_key.match(key)
        if m is None:
            out[key] = edits[key] if key in edits else reader(None, None)
            continue
        seen_layer_keys = True
        layer = int(m["idx"])
        if layer not in new_index:
            continue
        new_key = f"{m['prefix']}.{new_index[layer]}.{m['rest']}"
        rule = family.cut_rules.get(m["rest"])
        if rule is None:
            out[new_key] = edits[key] if key in edits else reader(None, None)
            continue
        dim, axis = rule
        rows = by_layer[layer].rows(axis, space.head_dim)
        if key in edits:
            out[new_key] = edits[key].index_select(dim, rows).contiguous()
        else:
            out[new_key] = reader(dim, rows)
    extra = sorted(set(edits) - seen_keys)
    for key in extra:  # tensors the base lacks (e.g. a compensation bias): slice by the same rules
        m = family.layer_key.match(key)
        if m is None or int(m["idx"]) not in new_index:
            raise AnyshapeError(f"edit for {key!r} names no tensor of a kept layer")
        rule = family.cut_rules.get(m["rest"])
        tensor = edits[key]
        if rule is not None:
            tensor = tensor.index_select(rule[0], by_layer[int(m["idx"])].rows(rule[1], space.head_dim))
        out[f"{m['prefix']}.{new_index[int(m['idx'])]}.{m['rest']}"] = tensor.contiguous()
    if not seen_layer_keys:
        raise AnyshapeError(f"no {family.name} layer tensors found in the weights at {path}; wrong family?")
    return out


def count_parameters(path: Path) -> int:
    """Parameters in a checkpoint, from tensor headers only (nothing is loaded)."""
    total = 0
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    if not key.endswith("position_ids"):
                        n = 1
                        for d in st.get_slice(key).get_shape():
                            n *= d
                        total += n
        else:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            total += sum(t.numel() for k, t in sd.items() if not k.endswith("position_ids"))
    return total


def _tensor_readers(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, read(dim, rows))`` for every tensor; ``read(None, None)`` reads it whole."""
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            handle = safe_open(str(f), framework="pt")
            for key in handle.keys():
                yield key, _safetensors_reader(handle, key)
        else:
            try:
                sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                raise AnyshapeError(f"cannot read weights {f}: {e}") from None
            for key, tensor in sd.items():
                yield key, _tensor_reader(tensor)


def _safetensors_reader(handle: Any, key: str) -> Any:
    def read(dim: int | None, rows: torch.Tensor | None) -> torch.Tensor:
        if dim is None or rows is None:
            return handle.get_tensor(key)
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == len(rows) and bool((rows[1:] > rows[:-1]).all()):
            window = handle.get_slice(key)
            part = window[first : last + 1] if dim == 0 else window[:, first : last + 1]
            return part.contiguous()
        return handle.get_tensor(key).index_select(dim, rows).contiguous()

    return read


def _tensor_reader(tensor: torch.Tensor) -> Any:
    def read(dim: int | None, rows: torch.Tensor | None) -> torch.Tensor:
        if dim is None or rows is None:
            return tensor.clone()
        return tensor.index_select(dim, rows).contiguous()

    return read


def _copy_aux_files(src: Path, dst: Path) -> None:
    """Copy tokenizer and other small files; never the base model's weights in any format."""
    for item in sorted(src.iterdir()):
        if item.name in _SKIP_FILES or item.name.startswith(".") or item.name.endswith(".index.json"):
            continue
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(item, dst / item.name)
        elif item.is_dir() and _is_small_config_dir(item):
            shutil.copytree(item, dst / item.name)


def _is_small_config_dir(path: Path) -> bool:
    files = [p for p in path.rglob("*") if p.is_file()]
    return bool(files) and all(not p.name.endswith(WEIGHT_SUFFIXES) and p.stat().st_size < 1 << 20 for p in files)


def write_config(sub_config: dict[str, Any], folder: Path) -> None:
    """``config.json`` as transformers writes it (``save_pretrained``: its version, ``dtype``, no stale keys),
    or the plain JSON for a model type this transformers does not know."""
    from transformers import AutoConfig

    data = dict(sub_config)
    dtype = data.pop("torch_dtype", None)
    if data.get("dtype") is None and dtype is not None:
        data["dtype"] = dtype
    data.pop("transformers_version", None)
    data.pop("_name_or_path", None)
    try:
        config = AutoConfig.for_model(**data)
    except (ValueError, KeyError):  # a model type this transformers has no config class for
        (folder / "config.json").write_text(json.dumps({k: v for k, v in data.items() if v is not None}, indent=2) + "\n")
        return
    config.save_pretrained(folder)


#: Tags every extracted card carries besides the base card's.
CARD_TAGS = ("anyshape", "pruned", "subnet")


def model_card(source: ModelSource, family: ModelFamily, shape: Shape, params: int, base_params: int, folder: Path) -> str:
    """The subnet's ``README.md``: the base card's metadata (licence, language, library, tags, ...) kept,
    ``base_model`` and the shape added (huggingface_hub's ``ModelCard``), and how to load it."""
    from huggingface_hub import ModelCard, ModelCardData

    assert shape.layers is not None
    data = ModelCardData()
    base_card = source.path / "README.md"
    if base_card.is_file():
        try:
            data = ModelCard.load(base_card).data
        except Exception:  # a README without (valid) metadata: keep none of it
            data = ModelCardData()
    meta = {k: v for k, v in data.to_dict().items() if k not in ("model-index", "base_model_relation")}
    if source.hub_id:
        meta["base_model"] = source.hub_id
        meta["base_model_relation"] = "finetune"  # the Hub's word for derived weights (pruned, not quantized)
    sentence_transformers = (folder / "modules.json").is_file()
    meta.setdefault("library_name", "sentence-transformers" if sentence_transformers else "transformers")
    meta.setdefault("pipeline_tag", "text-generation" if family.kind == "decoder"
                    else "sentence-similarity" if sentence_transformers else "feature-extraction")
    meta["tags"] = list(dict.fromkeys([*(meta.get("tags") or []), *CARD_TAGS]))
    meta["anyshape"] = {"shape": shape.to_dict(), "num_parameters": params, "base_num_parameters": base_params,
                        "base_model_source": source.spec}
    if sentence_transformers:
        load = ("```python\nfrom sentence_transformers import SentenceTransformer\n\n"
                "model = SentenceTransformer(\"<this folder>\")\nembeddings = model.encode([\"a sentence\", \"another\"])\n```\n")
    else:
        load = (f"```python\nfrom transformers import {family.auto_class}\n\n"
                f"model = {family.auto_class}.from_pretrained(\"<this folder>\")\n```\n")
    body = (
        f"# Subnet of {source.hub_id or source.spec}\n\n"
        f"Extracted by anyshape {__version__}: a {family.name} model with {len(shape.layers)} layers "
        f"(base layers {list(shape.layers)}), {shape.heads} heads, {shape.kv_heads} KV heads, FFN {shape.ffn}; "
        f"{params:,} parameters ({params / max(base_params, 1):.1%} of the base {base_params:,}).\n\n"
        f"{load}\n`{PROVENANCE_FILE}` records the config and the exact base heads and channels of every layer.\n"
    )
    return str(ModelCard(f"---\n{ModelCardData(**meta).to_yaml()}\n---\n\n{body}"))
