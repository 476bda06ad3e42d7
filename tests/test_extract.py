"""Physical extraction, run over every family (a contract suite) and the real MiniLM.

For each family: the full shape reproduces the base outputs; any seeded random shape equals
the base model with the dropped layers skipped and the dropped heads / channels zeroed at
the inputs of o_proj / down_proj; the directory reloads with stock transformers.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers

from nas.cuts import WidthOrders
from nas.extract import PROVENANCE_FILE, extract
from nas.families import family_for
from nas.hub import load_config_dict, resolve_model, weights_sha256
from nas.masking import masked_subnet
from nas.modeling import example_inputs, load_model, main_output
from nas.shape import Shape, ShapeSpace

ATOL = 1e-5
FAMILIES = ["llama", "llama-mha", "qwen2", "qwen3", "mistral", "bert", "roberta"]


def random_shape(space: ShapeSpace, rng: random.Random) -> Shape:
    depth = rng.randint(1, space.num_layers)
    layers = tuple(sorted(rng.sample(range(space.num_layers), depth)))
    heads, kv = rng.choice(space.head_choices())
    return Shape(layers=layers, heads=heads, kv_heads=kv, ffn=rng.randint(1, space.ffn_size))


def random_orders(space: ShapeSpace, rng: random.Random) -> WidthOrders:
    def perms(size: int) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(rng.sample(range(size), size)) for _ in range(space.num_layers))

    return WidthOrders(perms(space.num_heads), perms(space.num_kv_heads), perms(space.ffn_size))


def outputs(model, family, inputs):
    kwargs = {"use_cache": False} if family.kind == "decoder" else {}
    with torch.no_grad():
        return main_output(family, model(**inputs, **kwargs))


def stock_class(path):
    config = load_config_dict(path)
    return getattr(transformers, config["architectures"][0])


@pytest.mark.parametrize("name", FAMILIES)
def test_full_shape_reproduces_base(name, tiny_model, tmp_path):
    base_dir = tiny_model(name)
    result = extract(str(base_dir), Shape(), tmp_path / "full")
    base, family = load_model(str(base_dir))
    sub = stock_class(result.out).from_pretrained(result.out).eval()
    inputs = example_inputs(family, base.config.vocab_size, batch=2, seq_len=12)
    assert (outputs(base, family, inputs) - outputs(sub, family, inputs)).abs().max() <= ATOL
    assert result.num_parameters == result.base_num_parameters


@pytest.mark.parametrize("name", FAMILIES)
def test_random_shapes_equal_masked_base(name, tiny_model, tmp_path):
    base_dir = tiny_model(name)
    base, family = load_model(str(base_dir))
    space = family.space(load_config_dict(base_dir))
    rng = random.Random(f"shapes-{name}")
    inputs = example_inputs(family, base.config.vocab_size, batch=2, seq_len=10, seed=3)
    for i in range(6):
        shape = random_shape(space, rng)
        orders = random_orders(space, rng) if i % 2 else None  # importance orders shuffle which heads are kept
        result = extract(str(base_dir), shape, tmp_path / f"s{i}", orders=orders)
        sub = stock_class(result.out).from_pretrained(result.out).eval()
        assert type(sub) is type(base)
        with masked_subnet(base, family, space, result.cuts):
            expected = outputs(base, family, inputs)
        got = outputs(sub, family, inputs)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= ATOL, f"shape {shape}"
        # the masked context restored the base model
        assert len(family.layers(base)) == space.num_layers


@pytest.mark.parametrize("name", ["llama", "qwen2", "mistral"])
def test_gqa_config_numbers_and_group_layout(name, tiny_model, tmp_path):
    base_dir = tiny_model(name)
    space = family_for(load_config_dict(base_dir)).space(load_config_dict(base_dir))
    g = space.group_size
    result = extract(str(base_dir), Shape(layers=(1, 3), heads=g, kv_heads=1, ffn=20), tmp_path / "o")
    config = load_config_dict(result.out)
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (2, g, 1)
    assert config["intermediate_size"] == 20 and config["head_dim"] == space.head_dim
    for cut in result.cuts:  # each kept query head belongs to the kept KV group
        assert [h // g for h in cut.heads] == [cut.kv_heads[0]] * g


def test_sliding_window_layer_types_follow_kept_layers(tiny_model, tmp_path):
    base_dir = tiny_model("qwen2")
    base_types = transformers.AutoConfig.from_pretrained(base_dir).layer_types
    result = extract(str(base_dir), Shape(layers=(0, 3)), tmp_path / "o")
    assert load_config_dict(result.out)["layer_types"] == [base_types[0], base_types[3]]


def test_provenance_records_exact_indices(tiny_model, tmp_path):
    base_dir = tiny_model("llama")
    result = extract(str(base_dir), Shape(layers=(0, 2), heads=4, kv_heads=2, ffn=7), tmp_path / "o")
    record = json.loads((result.out / PROVENANCE_FILE).read_text())
    assert record["config"]["format"] == "anyshape/subnet-v1"
    assert record["base_model"]["sha256"] == weights_sha256(base_dir)
    assert [layer["base_layer"] for layer in record["layers"]] == [0, 2]
    assert record["layers"][0]["heads"] == [0, 1, 2, 3] and record["layers"][0]["kv_heads"] == [0, 1]
    assert record["layers"][1]["ffn"] == list(range(7))


def test_minilm_shapes_and_tokenizer(minilm_dir, tmp_path):
    base, family = load_model("minilm")
    space = family.space(load_config_dict(minilm_dir))
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    inputs = tokenizer(["any shape you like", "a smaller model, extracted exactly"], padding=True, return_tensors="pt")
    full = extract("minilm", Shape(), tmp_path / "full")
    assert (outputs(base, family, inputs) - outputs(transformers.AutoModel.from_pretrained(full.out), family, inputs)).abs().max() <= ATOL
    rng = random.Random("minilm")
    for i in range(3):
        shape = random_shape(space, rng)
        result = extract(resolve_model("minilm"), shape, tmp_path / f"s{i}")
        sub = transformers.AutoModel.from_pretrained(result.out).eval()
        with masked_subnet(base, family, space, result.cuts):
            expected = outputs(base, family, inputs)
        assert (outputs(sub, family, inputs) - expected).abs().max() <= ATOL
    reloaded = transformers.AutoTokenizer.from_pretrained(result.out)
    assert reloaded("any shape you like")["input_ids"] == tokenizer("any shape you like")["input_ids"]
    assert (result.out / "1_Pooling" / "config.json").is_file()


def test_extraction_is_deterministic(tiny_model, tmp_path):
    base_dir = tiny_model("qwen2")
    shape = Shape(layers=(0, 1), heads=4, kv_heads=1, ffn=9)
    a = extract(str(base_dir), shape, tmp_path / "a")
    b = extract(str(base_dir), shape, tmp_path / "b")
    assert (a.out / "model.safetensors").read_bytes() == (b.out / "model.safetensors").read_bytes()
