"""SMoL (AmoebaLLM): a shape-aware mixture of LoRA experts on every linear layer of the blocks.

Each targeted linear ``W`` (q, k, v, o, FFN in/out of every base layer) has K LoRA experts
``(A_k: (r, in), B_k: (out, r))``. A gate reads only the shape -- the layer-active mask over the
base layers and the width fractions (heads, kv_heads, ffn) -- and gives, per base layer, K
logits; the top-k are softmaxed into mixing weights ``w`` (the rest are 0). The layer computes

    y = W x + b + alpha / r * sum_k w_k B_k A_k x

Because ``w`` depends on the shape alone, for one shape each linear gets the fixed delta
``alpha / r * sum_k w_k B_k A_k`` that merges into ``W`` ahead of time (:meth:`SMoL.deltas`,
:func:`adapted`); an extracted subnet is a stock checkpoint. With ``full_is_base`` (the default)
the mixture is also scaled by the shape's amplitude ``1 - params(shape) / params(full)`` (block
parameters): the full shape is the base model exactly, a shape near it moves little, the smallest
gets nearly the whole delta -- distillation from the base cannot pull the largest away from it. The gate is deterministic at
evaluation: logit noise, if any, is added only in training and drawn from a passed generator.
(AmoebaLLM's code adds the noise at evaluation too; we do not.)

Mode ``single`` is one shared LoRA (K = 1, weight 1, no gate): the ablation baseline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.adapters.config import AdapterConfig
from nas.families import ModelFamily
from nas.shape import Shape, ShapeSpace


@dataclass(frozen=True)
class Target:
    """One adapted linear: its base layer, its name inside the layer (``self_attn.q_proj``), its sizes."""

    layer: int
    name: str
    in_features: int
    out_features: int

    @property
    def key(self) -> str:  # parameter names cannot hold dots
        return f"L{self.layer}__{self.name.replace('.', '__')}"


def lora_targets(model: nn.Module, family: ModelFamily) -> list[tuple[Target, nn.Linear]]:
    """Every linear layer of every block (attention q/k/v/o, FFN in/out), in a stable order."""
    out: list[tuple[Target, nn.Linear]] = []
    for index, layer in enumerate(family.layers(model)):
        names = {id(m): n for n, m in layer.named_modules()}
        linears = [*family.attn_in_projs(layer).values(), family.attn_out_proj(layer), *family.ffn_in_projs(layer),
                   family.ffn_out_proj(layer)]
        for linear in linears:
            out.append((Target(index, names[id(linear)], linear.in_features, linear.out_features), linear))
    return out


def block_params(space: ShapeSpace, shape: Shape) -> int:
    """Parameters in the blocks of a resolved ``shape`` (attention + FFN weights)."""
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    attn = space.hidden_size * space.head_dim * (2 * shape.heads + 2 * shape.kv_heads)
    ffn_mats = 3 if space.family in ("llama", "qwen2", "qwen3", "mistral") else 2
    return len(shape.layers) * (attn + ffn_mats * space.hidden_size * shape.ffn)


def amplitude(space: ShapeSpace, shape: Shape) -> float:
    """``1 - params(shape) / params(full)``: how much of its LoRA mixture a shape gets (0 for the full shape)."""
    return min(1.0, max(0.0, 1.0 - block_params(space, shape) / block_params(space, space.full_shape())))


def shape_features(space: ShapeSpace, shape: Shape) -> torch.Tensor:
    """The gate's only input: layer-active mask (L) and width fractions (heads, kv_heads, ffn). -> (L + 3,)"""
    assert shape.layers is not None and shape.heads is not None and shape.kv_heads is not None and shape.ffn is not None
    mask = torch.zeros(space.num_layers)
    mask[list(shape.layers)] = 1.0
    widths = torch.tensor([shape.heads / space.num_heads, shape.kv_heads / space.num_kv_heads, shape.ffn / space.ffn_size])
    return torch.cat([mask, widths])


class SMoL(nn.Module):
    """LoRA experts for every target linear and the shape gate (one module, one state dict)."""

    def __init__(self, space: ShapeSpace, targets: list[Target], config: AdapterConfig, seed: int = 0):
        super().__init__()
        if config.mode == "none":
            raise ValueError("SMoL needs adapter mode 'smol' or 'single'")
        self.space, self.targets, self.config = space, list(targets), config
        K, r = config.num_experts, config.rank
        gen = torch.Generator().manual_seed(seed)
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        for t in self.targets:
            # A ~ Kaiming-uniform-like, B = 0: the adapted model starts as the base model (as in LoRA)
            bound = 1.0 / t.in_features**0.5
            self.A[t.key] = nn.Parameter((torch.rand(K, r, t.in_features, generator=gen) * 2 - 1) * bound)
            self.B[t.key] = nn.Parameter(torch.zeros(K, t.out_features, r))
        L = space.num_layers
        self.gate: nn.Module | None = None
        if config.mode == "smol":
            self.gate = nn.Sequential(nn.Linear(L + 3, config.gate_hidden), nn.Tanh(), nn.Linear(config.gate_hidden, L * K))
            with torch.no_grad():
                for p in self.gate.parameters():
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / p.shape[-1] ** 0.5)

    # ---- routing -----------------------------------------------------------------------------
    def amplitude(self, shape: Shape) -> float:
        """The scale of ``shape``'s mixture: :func:`amplitude` with ``full_is_base``, else 1."""
        return amplitude(self.space, shape) if self.config.full_is_base else 1.0

    def routing(self, shape: Shape, noise: torch.Generator | None = None) -> torch.Tensor:
        """Per base layer, the experts' mixing weights for ``shape``. -> (L, K); rows sum to :meth:`amplitude`.

        Deterministic unless the module is in training mode and a ``noise`` generator is given.
        """
        L, K = self.space.num_layers, self.config.num_experts
        device = next(iter(self.A.values())).device
        scale = self.amplitude(shape)
        if self.gate is None:
            return torch.full((L, K), scale, device=device)
        logits = self.gate(shape_features(self.space, shape).to(device)).view(L, K)  # (L, K)
        if self.training and noise is not None and self.config.gate_noise > 0:
            logits = logits + self.config.gate_noise * torch.randn(L, K, generator=noise).to(device)
        top, index = logits.topk(self.config.top_k, dim=-1)  # (L, k)
        return torch.zeros(L, K, device=device).scatter(-1, index, scale * torch.softmax(top, dim=-1))

    # ---- merged form -------------------------------------------------------------------------
    def delta(self, target: Target, weights: torch.Tensor) -> torch.Tensor:
        """The mixed LoRA of one linear for one layer's expert ``weights`` (K,). -> (out, in)"""
        A, B = self.A[target.key], self.B[target.key]  # (K, r, in), (K, out, r)
        return self.config.scale * torch.einsum("k,kor,kri->oi", weights, B, A)

    @torch.no_grad()
    def deltas(self, shape: Shape) -> dict[Target, torch.Tensor]:
        """For a resolved ``shape``: the merged delta of every target linear of its kept layers."""
        assert shape.layers is not None
        weights = self.routing(shape)
        kept = set(shape.layers)
        return {t: self.delta(t, weights[t.layer]) for t in self.targets if t.layer in kept}

    # ---- unmerged form (training) ------------------------------------------------------------
    @contextlib.contextmanager
    def applied(self, model: nn.Module, family: ModelFamily, shape: Shape,
                noise: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Within the block, every target linear of the kept layers adds its mixed LoRA output.

        Yields the routing weights (L, K); gradients flow to the experts and the gate.
        """
        assert shape.layers is not None
        weights = self.routing(shape, noise)
        kept = set(shape.layers)
        modules = dict((t, m) for t, m in lora_targets(model, family))
        handles = []
        try:
            for t in self.targets:
                if t.layer in kept:
                    handles.append(modules[t].register_forward_hook(self._hook(t, weights[t.layer])))
            yield weights
        finally:
            for h in handles:
                h.remove()

    def _hook(self, target: Target, weights: torch.Tensor):  # type: ignore[no-untyped-def]
        A, B = self.A[target.key], self.B[target.key]
        active = [int(k) for k in weights.nonzero().flatten()]
        scale = self.config.scale

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            extra = sum(weights[k] * ((x @ A[k].T) @ B[k].T) for k in active)  # (..., out)
            return output + scale * extra

        return hook


@contextlib.contextmanager
def adapted(model: nn.Module, family: ModelFamily, smol: SMoL | None, shape: Shape) -> Iterator[nn.Module]:
    """Within the block, ``model``'s weights carry ``shape``'s merged LoRA deltas; restored exactly on exit.

    With ``smol`` None (an untrained supernet) this does nothing.
    """
    if smol is None:
        yield model
        return
    modules = dict(lora_targets(model, family))
    saved: dict[Target, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for t, d in smol.deltas(shape).items():
                w = modules[t].weight
                saved[t] = w.detach().clone()
                w.add_(d.to(w.dtype))
        yield model
    finally:
        with torch.no_grad():
            for t, w in saved.items():
                modules[t].weight.copy_(w)


def adapter_tensors(smol: SMoL) -> dict[str, torch.Tensor]:
    """The SMoL state dict as contiguous fp32 tensors (for ``adapters.safetensors``)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in smol.state_dict().items()}


def smol_from_tensors(space: ShapeSpace, targets: list[Target], config: AdapterConfig,
                      tensors: Mapping[str, torch.Tensor]) -> SMoL:
    smol = SMoL(space, targets, config)
    smol.load_state_dict(dict(tensors))
    smol.eval()
    return smol


ADAPTERS_FORMAT = "anyshape/adapters-v1"


def targets_to_json(targets: list[Target]) -> list[list[object]]:
    return [[t.layer, t.name, t.in_features, t.out_features] for t in targets]


def smol_from_supernet(supernet: Any) -> SMoL | None:
    """The trained SMoL of a supernet (:class:`nas.supernet.artifact.Supernet`), or None if untrained."""
    from nas.errors import AnyshapeError

    section = getattr(supernet, "adapters", None)
    tensors = getattr(supernet, "adapter_tensors", None)
    if section is None or tensors is None:
        return None
    if section.get("format") != ADAPTERS_FORMAT:
        raise AnyshapeError(f"supernet adapters have format {section.get('format')!r}; this anyshape reads {ADAPTERS_FORMAT!r}")
    targets = [Target(int(a), str(b), int(c), int(d)) for a, b, c, d in section["targets"]]
    try:
        return smol_from_tensors(supernet.space, targets, AdapterConfig.from_dict(section["config"]), tensors)
    except RuntimeError as e:
        raise AnyshapeError(f"supernet adapters do not match their recorded config: {str(e).splitlines()[0]}") from None
