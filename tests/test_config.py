"""Subnet configs (anyshape/subnet-v1): YAML and JSON round trips and validation."""

from __future__ import annotations

import pytest

from nas.config import BaseModelRef, SubnetConfig, SupernetRef
from nas.errors import AnyshapeError
from nas.shape import Shape

SHA = "ab" * 32


def example() -> SubnetConfig:
    return SubnetConfig(
        base_model=BaseModelRef("minilm", SHA),
        supernet=SupernetRef("studies/minilm/supernet", "cd" * 32),
        shape=Shape(layers=(0, 1, 3, 5), heads=12, kv_heads=12, ffn=1024),
        objectives={"accuracy": {"metric": "cosine", "value": 0.97}, "cpu/onnxruntime/prefill-b1-s128": {"predicted_ms": 3.2}},
    )


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    config = example()
    path = config.save(tmp_path / f"subnet{suffix}")
    loaded = SubnetConfig.load(path)
    assert loaded == config
    assert loaded.to_dict() == config.to_dict()


def test_yaml_reads_like_the_architecture_doc(tmp_path):
    text = example().dumps("yaml")
    assert text.startswith("format: anyshape/subnet-v1\n")
    assert "shape:\n  layers: [0, 1, 3, 5]\n  heads: 12\n  kv_heads: 12\n  ffn: 1024\n" in text


def test_minimal_config_without_supernet_or_widths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("format: anyshape/subnet-v1\nbase_model: {source: minilm}\nshape: {layers: [0, 1]}\n")
    config = SubnetConfig.load(path)
    assert config.supernet is None and config.shape == Shape(layers=(0, 1)) and config.base_model.sha256 is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format: anyshape/subnet-v9\nbase_model: {source: m}\nshape: {}\n", "reads 'anyshape/subnet-v1'"),
        ("base_model: {source: m}\nshape: {}\n", "no 'format'"),
        ("format: anyshape/subnet-v1\nshape: {}\n", "'base_model' is missing"),
        ("format: anyshape/subnet-v1\nbase_model: {source: m, sha256: xyz}\nshape: {}\n", "64 hex digits"),
        ("format: anyshape/subnet-v1\nbase_model: {source: m}\nshape: {ffn: a}\n", "shape.ffn must be an integer"),
        ("format: anyshape/subnet-v1\nbase_model: {source: m}\nshape: {}\nextra: 1\n", "unknown field"),
        ("format: [unclosed\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
    ],
)
def test_bad_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(AnyshapeError, match=message):
        SubnetConfig.load(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(AnyshapeError, match="does not exist"):
        SubnetConfig.load(tmp_path / "nope.yaml")


def test_bad_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{")
    with pytest.raises(AnyshapeError, match="not valid JSON"):
        SubnetConfig.load(path)
