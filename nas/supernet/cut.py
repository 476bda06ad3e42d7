"""Cut a shape out of a supernet: the depth table picks layers, the orders pick heads and channels.

With bias compensation, the removed channels' mean contribution ``W[:, R] @ mean(x_R)`` is
added to the output projections' biases. BERT-style encoders have those biases. Llama's o_proj
and down_proj have none by default, but ``LlamaConfig`` has ``attention_bias`` and ``mlp_bias``:
the subnet is written with both set and zero biases on q/k/v and gate/up, so stock
``LlamaForCausalLM`` loads it (a few thousand extra parameters). Other families (Qwen2/3,
Mistral) have no such switch; a supernet for them is built without compensation.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas._io import atomic_directory
from nas.config import BaseModelRef, SubnetConfig, SupernetRef
from nas.cuts import LayerCut, plan_cuts
from nas.errors import AnyshapeError
from nas.extract import ExtractResult, extract
from nas.families import ModelFamily, family_for
from nas.hub import ModelSource, resolve_model, weight_files, weights_sha256
from nas.shape import Shape
from nas.supernet.artifact import Supernet

#: family -> (attention output projection, FFN output projection, config switches, zero biases to add)
COMPENSATION_LAYOUT: dict[str, tuple[str, str, dict[str, bool], tuple[str, ...]]] = {
    "bert": ("attention.output.dense", "output.dense", {}, ()),
    "llama": (
        "self_attn.o_proj",
        "mlp.down_proj",
        {"attention_bias": True, "mlp_bias": True},
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"),
    ),
}


def load_supernet_for(supernet_dir: str | Path, *, model: str | None = None, sha256: str | None = None) -> tuple[Supernet, ModelSource, str]:
    """The supernet, its base model (checked by sha256), and the base sha256."""
    supernet = Supernet.load(supernet_dir)
    if sha256 is not None and supernet.sha256() != sha256.lower():
        raise AnyshapeError(
            f"supernet {supernet_dir} has sha256 {supernet.sha256()[:12]}..., the config expects {sha256[:12]}...; "
            "it was rebuilt or replaced since the config was written"
        )
    source = resolve_model(model) if model is not None else _base_source(supernet, Path(supernet_dir))
    sha = weights_sha256(source.path)
    if sha != supernet.base_sha256:
        raise AnyshapeError(
            f"base model {source.spec} has weights sha256 {sha[:12]}..., but supernet {supernet_dir} was built from "
            f"{supernet.base_source} with sha256 {supernet.base_sha256[:12]}...; rebuild the supernet for these weights "
            "or pass the base model it was built from"
        )
    return supernet, source, sha


def extract_from_supernet(
    supernet_dir: str | Path,
    shape: Shape | Mapping[str, Any],
    out: str | Path,
    *,
    model: str | None = None,
    config: SubnetConfig | None = None,
    onnx: bool = False,
    overwrite: bool = False,
) -> ExtractResult:
    """``anyshape extract --supernet DIR --shape SHAPE --out OUT`` (shape may give ``depth`` instead of ``layers``)."""
    supernet, source, sha = load_supernet_for(
        supernet_dir, model=model, sha256=config.supernet.sha256 if config and config.supernet else None
    )
    resolved = supernet.resolve_shape(shape)
    if config is None:
        config = SubnetConfig(
            base_model=BaseModelRef(source.spec, sha),
            supernet=SupernetRef(str(Path(supernet_dir)), supernet.sha256()),
            shape=resolved,
        )
    cuts = plan_cuts(supernet.space, resolved, supernet.orders)
    edits = adapter_edits(supernet, source, resolved)  # a trained supernet: the shape's merged LoRA deltas
    switches: dict[str, bool] = {}
    if supernet.bias_compensation:
        bias_edits, switches = compensation_edits(supernet, source, cuts, weights=edits)
        edits = {**edits, **bias_edits}
    if not switches or not edits:
        return extract(source, resolved, out, orders=supernet.orders, edits=edits, config=config, onnx=onnx,
                       overwrite=overwrite, base_sha256=sha)
    # the subnet's config needs switches the base lacks (Llama biases): extract, patch config.json, then export
    with atomic_directory(out, overwrite=overwrite) as tmp:
        stage = tmp / "subnet"
        result = extract(source, resolved, stage, orders=supernet.orders, edits=edits, config=config, base_sha256=sha)
        for item in stage.iterdir():
            os.replace(item, tmp / item.name)
        shutil.rmtree(stage)
        sub_config = json.loads((tmp / "config.json").read_text())
        sub_config.update(switches)
        (tmp / "config.json").write_text(json.dumps(sub_config, indent=2) + "\n")
        if onnx:
            from nas.onnx_export import export_onnx

            result.onnx = export_onnx(tmp, family_for(sub_config), tmp / "model.onnx")
        result.files = sorted(p.name for p in tmp.iterdir())
    result.out = Path(out).absolute()
    return result


def adapter_edits(supernet: Supernet, source: ModelSource, shape: Shape) -> dict[str, torch.Tensor]:
    """A trained supernet's merged weights ``W + delta(shape)`` by base key (empty when untrained)."""
    from nas.adapters.smol import smol_from_supernet

    smol = smol_from_supernet(supernet)
    if smol is None:
        return {}
    family = family_for(source.config_dict())
    deltas = smol.deltas(shape)
    tensors = _layer_tensors(source.path, family.layer_key, {t.layer for t in deltas})
    edits: dict[str, torch.Tensor] = {}
    for target, delta in deltas.items():
        keys = tensors[target.layer]
        weight = keys.get(f"{target.name}.weight")
        if weight is None or tuple(weight.shape) != tuple(delta.shape):
            raise AnyshapeError(f"the supernet's adapters do not fit base layer {target.layer} {target.name} of {source.spec}")
        edits[f"{keys['__prefix__']}.{target.name}.weight"] = (weight.float() + delta).to(weight.dtype)
    return edits


def compensation_edits(
    supernet: Supernet, source: ModelSource, cuts: list[LayerCut], weights: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """Bias tensors (by base key) that carry FLAP's compensation for ``cuts``, and config switches to set.

    ``weights`` overrides base tensors by key (a trained supernet's merged weights).
    """
    if supernet.family not in COMPENSATION_LAYOUT:
        raise AnyshapeError(f"bias compensation is not available for {supernet.family} models")
    assert supernet.attn_mean is not None and supernet.ffn_mean is not None
    attn_name, ffn_name, switches, zero_names = COMPENSATION_LAYOUT[supernet.family]
    space = supernet.space
    family = family_for(source.config_dict())
    tensors = _layer_tensors(source.path, family.layer_key, {c.layer for c in cuts})
    edits: dict[str, torch.Tensor] = {}
    for cut in cuts:
        keys = tensors[cut.layer]
        prefix = keys["__prefix__"]
        for name, rows, mean in (
            (attn_name, cut.rows("q", space.head_dim), supernet.attn_mean[cut.layer]),
            (ffn_name, cut.rows("ffn", 0), supernet.ffn_mean[cut.layer]),
        ):
            weight = (weights or {}).get(f"{prefix}.{name}.weight", keys[f"{name}.weight"])
            removed = _complement(rows, weight.shape[1])
            bias = keys.get(f"{name}.bias")
            base = bias if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
            edits[f"{prefix}.{name}.bias"] = base + weight[:, removed] @ mean[removed].to(weight.dtype)
        for name in zero_names:
            if f"{name}.bias" not in keys:
                edits[f"{prefix}.{name}.bias"] = torch.zeros(keys[f"{name}.weight"].shape[0], dtype=keys[f"{name}.weight"].dtype)
    return edits, dict(switches)


def compensation_shifts(
    supernet: Supernet, model: torch.nn.Module, family: ModelFamily, cuts: list[LayerCut]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The same compensation as hooks for a masked forward (see :func:`nas.supernet.width.compensated`)."""
    from nas.supernet.width import ChannelStats, compensation_biases

    assert supernet.attn_mean is not None and supernet.ffn_mean is not None
    stats = ChannelStats(supernet.attn_mean, supernet.attn_mean, supernet.ffn_mean, supernet.ffn_mean)
    return compensation_biases(model, family, supernet.space, cuts, stats)


def _complement(kept: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


def _layer_tensors(path: Path, layer_key: Any, layers: set[int]) -> dict[int, dict[str, Any]]:
    """Per base layer, its tensors by name (``rest``) and ``__prefix__`` (``model.layers.3``)."""
    out: dict[int, dict[str, Any]] = {i: {} for i in layers}
    for f in weight_files(path):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():
                    m = layer_key.match(key)
                    if m and int(m["idx"]) in layers:
                        out[int(m["idx"])][m["rest"]] = handle.get_tensor(key)
                        out[int(m["idx"])]["__prefix__"] = f"{m['prefix']}.{m['idx']}"
        else:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            for key, tensor in sd.items():
                m = layer_key.match(key)
                if m and int(m["idx"]) in layers:
                    out[int(m["idx"])][m["rest"]] = tensor
                    out[int(m["idx"])]["__prefix__"] = f"{m['prefix']}.{m['idx']}"
    return out


def _base_source(supernet: Supernet, supernet_dir: Path) -> ModelSource:
    spec = supernet.base_source
    candidate = supernet_dir / spec
    if not Path(spec).is_absolute() and not Path(spec).exists() and (candidate / "config.json").is_file():
        return resolve_model(str(candidate))
    return resolve_model(spec)
