"""A safetensors writer that streams tensor bytes straight to the file.

``safetensors.torch.save_file`` first copies every tensor into a Python ``bytes`` object,
then writes; for extraction that doubles the memory traffic. This writes the same format
(8-byte little-endian header length, JSON header, raw little-endian data) from each
tensor's own memory. Files it writes are read by the official library (tested).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` in the safetensors format."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    ordered = sorted(tensors.items())
    for name, tensor in ordered:
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"cannot store {name} of dtype {tensor.dtype} in safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(Path(path), "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, tensor in ordered:
            if tensor.numel():
                data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                f.write(data.numpy().data)
