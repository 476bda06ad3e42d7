"""Extracted checkpoints keep the ecosystem's metadata: the base card, config.json as transformers writes it,
and sentence-transformers models loadable (and identical) through sentence-transformers."""

from __future__ import annotations

import json

import pytest
import torch

from nas.extract import CARD_TAGS, extract
from nas.shape import Shape

SHAPE = Shape(layers=(0, 2, 5), heads=12, kv_heads=12, ffn=768)


@pytest.fixture(scope="module")
def minilm_subnet(minilm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "sub"
    extract("minilm", SHAPE, out)
    return out


def test_card_keeps_base_metadata_and_adds_the_shape(minilm_dir, minilm_subnet):
    from huggingface_hub import ModelCard

    base = ModelCard.load(minilm_dir / "README.md").data
    card = ModelCard.load(minilm_subnet / "README.md")
    data = card.data
    for key in ("license", "language", "library_name", "datasets", "pipeline_tag"):
        assert getattr(data, key) == getattr(base, key), key
    assert data.license == "apache-2.0" and data.library_name == "sentence-transformers"
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.tags == [*base.tags, *CARD_TAGS]
    assert data.to_dict()["anyshape"]["shape"] == SHAPE.to_dict()
    assert "SentenceTransformer(" in card.text and "AutoModel" not in card.text


def test_config_is_what_transformers_writes(minilm_subnet):
    from transformers import AutoConfig

    raw = json.loads((minilm_subnet / "config.json").read_text())
    assert "torch_dtype" not in raw and all(v is not None for k, v in raw.items() if k in ("dtype",))
    assert raw["transformers_version"] != "4.8.2"  # the base's stale version is not copied
    config = AutoConfig.from_pretrained(minilm_subnet)
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size, config.hidden_size) == (3, 12, 768, 384)


def test_sentence_transformers_loads_the_subnet_like_transformers(minilm_subnet):
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel, AutoTokenizer

    texts = ["a cat sat on the mat", "stock markets fell sharply", "word"]
    got = st.SentenceTransformer(str(minilm_subnet), device="cpu").encode(texts, convert_to_tensor=True)
    tok = AutoTokenizer.from_pretrained(minilm_subnet)
    model = AutoModel.from_pretrained(minilm_subnet).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_decoder_card_and_config(tiny_model, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "sub"
    extract(tiny_model("llama"), Shape(layers=(0, 1), heads=4, kv_heads=2, ffn=32), out)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model is None  # a local directory is no Hub repository
    assert "AutoModelForCausalLM.from_pretrained" in card.text
    assert "torch_dtype" not in json.loads((out / "config.json").read_text())
