"""``anyshape quickstart``: the end-to-end run on the embedded default model (MiniLM).

Until the search stage lands, this runs what exists end to end: inspect MiniLM, extract a
half-depth, half-FFN subnet with ONNX, and compare it with the full model on real sentences
(embedding agreement and CPU latency). It writes under ``studies/quickstart/`` and can be
run again (each run replaces the previous one).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.extract import ExtractResult, extract
from nas.inspect import inspect_model
from nas.shape import Shape

SENTENCES = [
    "A deployment engineer picks one model shape per device.",
    "The supernet holds every depth and width of the base model at once.",
    "Latency lookup tables are measured on the target hardware.",
    "Optuna searches the trade-off between accuracy and latency.",
    "The Pareto front is exported as ready-to-extract configs.",
    "Each config becomes a standalone Hugging Face checkpoint.",
    "Smaller subnets run faster but agree less with the full model.",
    "Nothing here needs a network connection or a GPU.",
]


@dataclass
class QuickstartResult:
    model: dict[str, Any]
    extraction: ExtractResult
    cosine_mean: float
    cosine_min: float
    full_latency_ms_p50: float
    subnet_latency_ms_p50: float

    @property
    def speedup(self) -> float:
        return self.full_latency_ms_p50 / self.subnet_latency_ms_p50


def run_quickstart(out_dir: str | Path = "studies/quickstart", *, model: str = "minilm", repeats: int = 20) -> QuickstartResult:
    from transformers import AutoTokenizer

    from nas.modeling import load_model

    out_dir = Path(out_dir)
    info = inspect_model(model)
    shape = Shape(layers=tuple(range(0, info["layers"], 2)), ffn=info["ffn_size"] // 2)
    extraction = extract(model, shape, out_dir / "subnet", onnx=True, overwrite=True)

    tokenizer = AutoTokenizer.from_pretrained(info["path"])
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    full, _ = load_model(model)
    sub, _ = load_model(str(extraction.out))
    full_emb = _mean_pooled(full, batch)
    sub_emb = _mean_pooled(sub, batch)
    cosine = torch.nn.functional.cosine_similarity(full_emb, sub_emb, dim=-1)
    return QuickstartResult(
        model=info,
        extraction=extraction,
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        full_latency_ms_p50=_latency_ms_p50(full, batch, repeats),
        subnet_latency_ms_p50=_latency_ms_p50(sub, batch, repeats),
    )


def _mean_pooled(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1)


def _latency_ms_p50(model: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> float:
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            start = time.perf_counter()
            model(**batch)
            if i >= 3:  # warm-up
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
