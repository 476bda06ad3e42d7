"""Our streaming safetensors writer produces files the official library reads back exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nas._safetensors import save_safetensors


def test_round_trip_through_official_reader(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(5, 7, generator=gen),
        "b.bf16": torch.randn(3, 4, generator=gen).to(torch.bfloat16),
        "c.half": torch.randn(9, generator=gen).half(),
        "d.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.slice": torch.randn(8, 8, generator=gen)[:, 2:5],  # non-contiguous
        "f.empty": torch.zeros(0, 4),
        "g.mask": torch.tensor([True, False, True]),
    }
    path = tmp_path / "m.safetensors"
    save_safetensors(tensors, path, metadata={"format": "pt"})
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="complex"):
        save_safetensors({"x": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "x.safetensors")
