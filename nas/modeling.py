"""Loading base and extracted models as stock transformers modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.errors import AnyshapeError
from nas.families import ModelFamily, family_for
from nas.hub import ModelSource, load_config_dict, resolve_model


def load_model(model: str | Path | ModelSource, *, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, ModelFamily]:
    """Load a model directory (or alias, or hub id) with its family's stock auto class, in eval mode."""
    source = model if isinstance(model, ModelSource) else resolve_model(str(model))
    family = family_for(load_config_dict(source.path))
    import transformers

    transformers.utils.logging.disable_progress_bar()
    auto: Any = getattr(transformers, family.auto_class)
    try:
        loaded = auto.from_pretrained(source.path, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnyshapeError(f"cannot load model from {source.path}: {first}") from None
    loaded.eval()
    return loaded, family


def example_inputs(family: ModelFamily, vocab_size: int, batch: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random token ids with a padded tail in the last row, for equivalence checks."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=gen)
    attention_mask = torch.ones(batch, seq_len, dtype=torch.int64)
    if batch > 1 and seq_len > 2:
        attention_mask[-1, seq_len - seq_len // 4 :] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if family.kind == "encoder":
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    return inputs


def main_output(family: ModelFamily, outputs: Any) -> torch.Tensor:
    """The tensor compared across implementations: logits (decoders) or last hidden state (encoders)."""
    return outputs.logits if family.kind == "decoder" else outputs.last_hidden_state
