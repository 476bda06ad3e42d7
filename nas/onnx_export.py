"""Export an extracted checkpoint to ONNX and check ONNX Runtime against torch.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``): the TorchScript exporter
fails on transformers 5 models (see shared/NOTES.md). Batch and sequence length are dynamic.
The export is checked on a batch and length different from the ones it was traced with.
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


def export_onnx(model_dir: Path, family: ModelFamily, out_path: Path) -> dict[str, Any]:
    """Write ``out_path`` (a single self-contained .onnx file) and return the parity check."""
    start = time.perf_counter()
    model, _ = load_model(str(model_dir))
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
