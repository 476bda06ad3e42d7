"""Export an extracted checkpoint to ONNX and check ONNX Runtime against torch.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``): the TorchScript exporter
fails on transformers 5 models (see shared/NOTES.md). Batch and sequence length are dynamic.
The export is checked on a batch and length different from the ones it was traced with.

Decoders are exported with a KV cache in the layout Optimum's ``ORTModelForCausalLM`` and ONNX
Runtime GenAI read: inputs ``input_ids`` [B, S], ``attention_mask`` [B, P + S], ``position_ids``
[B, S] and ``past_key_values.N.key`` / ``.value`` [B, kv_heads, P, head_dim]; outputs ``logits``
[B, S, V] and ``present.N.key`` / ``.value`` [B, kv_heads, P + S, head_dim]. One graph serves
prefill (P = 0: empty past tensors) and every decode step; the check is greedy generation with
ONNX Runtime (:func:`ort_generate`) token for token against torch's ``generate``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas._progress import phase
from nas.errors import AnyshapeError
from nas.families import ModelFamily
from nas.modeling import example_inputs, load_model

#: ONNX Runtime must match torch within this (fp32).
ONNX_ATOL = 1e-4


class _TensorOutputs(nn.Module):
    """Wrap a transformers model so that the exported graph has plain tensor outputs."""

    def __init__(self, model: nn.Module, family: ModelFamily):
        super().__init__()
        self.model = model
        self.kind = family.kind

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "decoder":
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


class CachedDecoder(nn.Module):
    """A causal LM as one step over flat tensors: (ids, mask, positions, past k/v per layer) -> (logits, present k/v)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model: Any = model
        self.num_layers = int(model.config.num_hidden_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True)
        present = out.past_key_values
        flat = [t for layer in present.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    """Optimum's input and output names of the per-layer cache tensors."""
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return past, present


def cache_geometry(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a decoder config."""
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv, head_dim


def decoder_step_inputs(config: Any, batch: int, seq_len: int, past_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded example inputs of one :class:`CachedDecoder` step (random past keys and values)."""
    gen = torch.Generator().manual_seed(seed)
    layers, kv, head_dim = cache_geometry(config)
    inputs = {"input_ids": torch.randint(0, int(config.vocab_size), (batch, seq_len), generator=gen),
              "attention_mask": torch.ones(batch, past_len + seq_len, dtype=torch.int64),
              "position_ids": torch.arange(past_len, past_len + seq_len).repeat(batch, 1)}
    for name in cache_names(layers)[0]:
        inputs[name] = torch.randn(batch, kv, past_len, head_dim, generator=gen)
    return inputs


def _export_decoder(model: nn.Module, out_path: Path) -> CachedDecoder:
    wrapper = CachedDecoder(model).eval()
    config: Any = model.config
    inputs = decoder_step_inputs(config, batch=2, seq_len=3, past_len=5)
    past_names, present_names = cache_names(wrapper.num_layers)
    auto = torch.export.Dim.AUTO
    dynamic: dict[str, Any] = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto},
                               "position_ids": {0: auto, 1: auto}}
    dynamic.update({name: {0: auto, 2: auto} for name in past_names})
    shapes = (dynamic["input_ids"], dynamic["attention_mask"], dynamic["position_ids"], tuple(dynamic[n] for n in past_names))
    with quiet_export():
        program = torch.onnx.export(
            wrapper, tuple(inputs.values()), dynamo=True, dynamic_shapes=shapes,  # (*past) is one argument
            input_names=list(inputs), output_names=["logits", *present_names], external_data=False,
        )
        if program is None:
            raise RuntimeError("the exporter returned no program")
        program.save(str(out_path), external_data=False)
    return wrapper


def ort_generate(session: Any, config: Any, input_ids: Any, max_new_tokens: int) -> tuple[Any, list[Any]]:
    """Greedy generation with a cached decoder graph: prefill with an empty past, then one token per step,
    feeding each step's ``present`` back as the next ``past_key_values``. Returns (ids, per-step logits)."""
    import numpy as np

    layers, kv, head_dim = cache_geometry(config)
    past_names, _ = cache_names(layers)
    batch = input_ids.shape[0]
    ids = np.asarray(input_ids, dtype=np.int64)
    past = {n: np.zeros((batch, kv, 0, head_dim), dtype=np.float32) for n in past_names}
    step_ids, start, logits_seen = ids, 0, []
    for _ in range(max_new_tokens):
        n = step_ids.shape[1]
        feed = {"input_ids": step_ids, "attention_mask": np.ones((batch, start + n), dtype=np.int64),
                "position_ids": np.tile(np.arange(start, start + n, dtype=np.int64), (batch, 1)), **past}
        logits, *present = session.run(None, feed)
        logits_seen.append(logits[:, -1])
        past = dict(zip(past_names, present))
        start += n
        step_ids = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        ids = np.concatenate([ids, step_ids], axis=1)
    return ids, logits_seen


def _generation_parity(path: Path, model: Any) -> float:
    """Greedy generation, ONNX Runtime vs torch: the tokens must agree exactly; returns the largest logit gap."""
    import onnxruntime as ort

    config: Any = model.config
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prompt = torch.randint(0, int(config.vocab_size), (2, 7), generator=torch.Generator().manual_seed(1))
    new = 6
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    ids, logits = ort_generate(session, config, prompt.numpy(), new)
    if not (ids == out.sequences.numpy()).all():
        raise AnyshapeError("ONNX Runtime generation with the KV cache differs from torch's greedy generation; not writing it")
    return max(float((torch.from_numpy(a) - b).abs().max()) for a, b in zip(logits, out.logits))


def export_onnx(model_dir: Path, family: ModelFamily, out_path: Path) -> dict[str, Any]:
    """Write ``out_path`` (a single self-contained .onnx file) and return the parity check."""
    with phase(f"ONNX export and check against torch ({model_dir.name})"):
        return _export_onnx(model_dir, family, out_path)


def _export_onnx(model_dir: Path, family: ModelFamily, out_path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    model, _ = load_model(str(model_dir))
    if family.kind == "decoder":
        try:
            _export_decoder(model, out_path)
        except Exception as e:  # the exporter raises many types; all mean "this model did not export"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AnyshapeError(f"ONNX export failed for {model_dir.name}: {first}") from None
        export_s = time.perf_counter() - start
        diff = _generation_parity(out_path, model)
        if diff > ONNX_ATOL:
            raise AnyshapeError(f"ONNX Runtime logits differ from torch's by {diff:.2e} (> {ONNX_ATOL:g}); not writing it")
        return {"file": out_path.name, "max_abs_diff_vs_torch": diff, "export_seconds": round(export_s, 3), "opset": _opset(out_path),
                "kv_cache": True, "check": "greedy generation, 2 x 7 prompt + 6 tokens"}
    wrapper = _TensorOutputs(model, family).eval()
    config: Any = model.config
    vocab = int(config.vocab_size)
    inputs = example_inputs(family, vocab, batch=2, seq_len=16)
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=2, max=int(getattr(config, "max_position_embeddings", 4096) or 4096))
    dynamic = {name: {0: batch, 1: seq} for name in inputs}
    try:
        with quiet_export():
            program = torch.onnx.export(
                wrapper,
                (),
                kwargs=inputs,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=list(inputs),
                output_names=["logits" if family.kind == "decoder" else "last_hidden_state"],
                external_data=False,
            )
            if program is None:
                raise RuntimeError("the exporter returned no program")
            program.save(str(out_path), external_data=False)
    except Exception as e:  # the exporter raises many types; all mean "this model did not export"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnyshapeError(f"ONNX export failed for {model_dir.name}: {first}") from None
    export_s = time.perf_counter() - start
    diff = _parity(out_path, wrapper, family, vocab)
    if diff > ONNX_ATOL:
        raise AnyshapeError(f"ONNX Runtime output differs from torch by {diff:.2e} (> {ONNX_ATOL:g}); not writing it")
    return {"file": out_path.name, "max_abs_diff_vs_torch": diff, "export_seconds": round(export_s, 3), "opset": _opset(out_path)}


def _parity(path: Path, wrapper: nn.Module, family: ModelFamily, vocab: int) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = example_inputs(family, vocab, batch=3, seq_len=11, seed=1)
    feed = {i.name: check[i.name].numpy() for i in session.get_inputs()}
    (onnx_out,) = session.run(None, feed)
    with torch.no_grad():
        torch_out = wrapper(**check)
    return float((torch.from_numpy(onnx_out) - torch_out).abs().max())


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def quiet_export() -> Any:
    """The dynamo exporter prints progress to stdout and warns a lot; keep the CLI's output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
