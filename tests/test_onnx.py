"""``--onnx``: ONNX Runtime runs the extracted model with the same outputs as torch."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers

from nas.extract import PROVENANCE_FILE, extract
from nas.families import family_for
from nas.hub import load_config_dict
from nas.modeling import example_inputs, main_output
from nas.shape import Shape

ONNX_ATOL = 1e-4


def check_onnx(out_dir, batch, seq_len, seed):
    config = load_config_dict(out_dir)
    family = family_for(config)
    model = getattr(transformers, config["architectures"][0]).from_pretrained(out_dir).eval()
    inputs = example_inputs(family, config["vocab_size"], batch=batch, seq_len=seq_len, seed=seed)
    session = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})
    kwargs = {"use_cache": False} if family.kind == "decoder" else {}
    with torch.no_grad():
        expected = main_output(family, model(**inputs, **kwargs)).numpy()
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("name", ["qwen2", "bert"])
def test_tiny_onnx_matches_torch_on_new_sizes(name, tiny_model, tmp_path):
    result = extract(str(tiny_model(name)), Shape(layers=(0, 2, 3), ffn=17), tmp_path / "o", onnx=True)
    assert result.onnx is not None and result.onnx["max_abs_diff_vs_torch"] <= ONNX_ATOL
    for batch, seq_len in ((1, 5), (4, 23)):  # sizes never seen at export
        assert check_onnx(result.out, batch, seq_len, seed=batch) <= ONNX_ATOL
    record = json.loads((result.out / PROVENANCE_FILE).read_text())
    assert record["onnx"]["file"] == "model.onnx"


@pytest.mark.slow
def test_minilm_onnx_matches_torch(tmp_path):
    result = extract("minilm", Shape(layers=(0, 2, 5), ffn=768), tmp_path / "o", onnx=True)
    assert check_onnx(result.out, batch=3, seq_len=40, seed=7) <= ONNX_ATOL
