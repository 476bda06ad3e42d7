"""What a model is, in the terms anyshape cuts it: family, sizes, parameters, shape space."""

from __future__ import annotations

from typing import Any

from nas.extract import count_parameters
from nas.families import family_for
from nas.hub import resolve_model, weights_sha256


def inspect_model(spec: str) -> dict[str, Any]:
    """A JSON-ready summary of the model at ``spec`` (path, builtin alias or hub id), or of a supernet directory."""
    from nas.supernet.artifact import is_supernet_dir

    if is_supernet_dir(spec):
        from nas.supernet.artifact import inspect_supernet

        return inspect_supernet(spec)
    source = resolve_model(spec)
    config = source.config_dict()
    family = family_for(config)
    space = family.space(config)
    return {
        "model": source.spec,
        "path": str(source.path),
        "family": family.name,
        "kind": family.kind,
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures") or [],
        "layers": space.num_layers,
        "heads": space.num_heads,
        "kv_heads": space.num_kv_heads,
        "head_dim": space.head_dim,
        "hidden_size": space.hidden_size,
        "ffn_size": space.ffn_size,
        "vocab_size": config.get("vocab_size"),
        "parameters": count_parameters(source.path),
        "weights_sha256": weights_sha256(source.path),
        "heads_policy": space.heads_note
        or (
            "whole KV groups kept, each with the same number of its query heads"
            if space.num_kv_heads < space.num_heads
            else "any number of heads"
        ),
        "shape_space": space.to_dict(),
    }
