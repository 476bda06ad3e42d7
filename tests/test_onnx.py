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


def test_tiny_encoder_onnx_matches_torch_on_new_sizes(tiny_model, tmp_path):
    result = extract(str(tiny_model("bert")), Shape(layers=(0, 2, 3), ffn=17), tmp_path / "o", onnx=True)
    assert result.onnx is not None and result.onnx["max_abs_diff_vs_torch"] <= ONNX_ATOL
    for batch, seq_len in ((1, 5), (4, 23)):  # sizes never seen at export
        assert check_onnx(result.out, batch, seq_len, seed=batch) <= ONNX_ATOL
    record = json.loads((result.out / PROVENANCE_FILE).read_text())
    assert record["onnx"]["file"] == "model.onnx"


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_decoder_onnx_has_optimum_kv_cache_and_generates_like_torch(name, tiny_model, tmp_path):
    from nas.onnx_export import cache_geometry, cache_names, ort_generate

    shape = Shape(layers=(0, 2, 3), heads=4, kv_heads=2, ffn=17) if name == "llama" else Shape(layers=(0, 2, 3), ffn=17)
    result = extract(str(tiny_model(name)), shape, tmp_path / "o", onnx=True)
    assert result.onnx is not None and result.onnx["kv_cache"] and result.onnx["max_abs_diff_vs_torch"] <= ONNX_ATOL
    session = ort.InferenceSession(str(result.out / "model.onnx"), providers=["CPUExecutionProvider"])
    past, present = cache_names(3)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "position_ids", *past]
    assert [o.name for o in session.get_outputs()] == ["logits", *present]
    model = transformers.AutoModelForCausalLM.from_pretrained(result.out).eval()
    for batch, prompt_len, new in ((1, 1, 9), (3, 12, 5)):  # sizes never seen at export, a one-token prompt included
        prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
        with torch.no_grad():
            want = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                                  do_sample=False, pad_token_id=0)
        got, _ = ort_generate(session, model.config, prompt.numpy(), new)
        np.testing.assert_array_equal(got, want.numpy())  # token for token
    # one cached step returns the past grown by the step, in the [B, kv_heads, P + S, head_dim] layout
    _, kv, head_dim = cache_geometry(model.config)
    feed = {"input_ids": np.zeros((2, 3), np.int64), "attention_mask": np.ones((2, 7), np.int64),
            "position_ids": np.tile(np.arange(4, 7), (2, 1)), **{n: np.zeros((2, kv, 4, head_dim), np.float32) for n in past}}
    _, first, *_ = session.run(None, feed)
    assert first.shape == (2, kv, 7, head_dim)


@pytest.mark.slow
def test_minilm_onnx_matches_torch(tmp_path):
    result = extract("minilm", Shape(layers=(0, 2, 5), ffn=768), tmp_path / "o", onnx=True)
    assert check_onnx(result.out, batch=3, seq_len=40, seed=7) <= ONNX_ATOL
