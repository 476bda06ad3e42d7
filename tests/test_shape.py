"""Shapes and shape spaces: defaults, the GQA rule, and errors that name the field and range."""

from __future__ import annotations

import pytest

from nas.errors import AnyshapeError
from nas.shape import Shape, ShapeSpace

GQA = ShapeSpace("llama", num_layers=6, num_heads=8, num_kv_heads=2, head_dim=16, hidden_size=128, ffn_size=300)
MHA = ShapeSpace("llama", num_layers=4, num_heads=6, num_kv_heads=6, head_dim=8, hidden_size=48, ffn_size=64)


def test_empty_shape_resolves_to_full_model():
    assert Shape().resolve(GQA) == GQA.full_shape() == Shape(layers=tuple(range(6)), heads=8, kv_heads=2, ffn=300)


def test_gqa_default_cuts_whole_kv_groups():
    assert Shape(heads=4).resolve(GQA).kv_heads == 1
    assert Shape(heads=8).resolve(GQA).kv_heads == 2


def test_gqa_fewer_query_heads_per_group_needs_kv_heads():
    shape = Shape(heads=6, kv_heads=2).resolve(GQA)
    assert (shape.heads, shape.kv_heads) == (6, 2)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (Shape(layers=()), "depth 0"),
        (Shape(layers=(0, 6)), "0..5"),
        (Shape(layers=(2, 1)), "strictly increasing"),
        (Shape(layers=(1, 1)), "strictly increasing"),
        (Shape(heads=3), "not a whole number of KV groups"),
        (Shape(heads=0), "1..8"),
        (Shape(heads=6, kv_heads=4), "kv_heads is 4; allowed range 1..2"),
        (Shape(heads=5, kv_heads=2), "must be one of 2, 4, 6, 8"),
        (Shape(heads=2, kv_heads=1, ffn=301), "shape.ffn is 301; allowed range 1..300"),
        (Shape(ffn=0), "1..300"),
    ],
)
def test_invalid_shapes_name_field_and_range(shape, message):
    with pytest.raises(AnyshapeError, match=message):
        shape.resolve(GQA)


def test_head_choices_follow_the_gqa_rule():
    choices = GQA.head_choices()
    assert choices == sorted({(kv * q, kv) for kv in (1, 2) for q in (1, 2, 3, 4)})
    for heads, kv in choices:
        Shape(heads=heads, kv_heads=kv).resolve(GQA)
    assert MHA.head_choices() == [(h, h) for h in range(1, 7)]


def test_heads_fixed_where_family_cannot_cut_them():
    space = ShapeSpace("bert", 2, 4, 4, 8, 32, 48, heads_cuttable=False, heads_note="no")
    assert Shape().resolve(space).heads == 4
    with pytest.raises(AnyshapeError, match="allowed: 4"):
        Shape(heads=2).resolve(space)


def test_ffn_grid_is_within_range_and_includes_full():
    grid = GQA.ffn_choices()
    assert grid[-1] == 300 and all(1 <= f <= 300 for f in grid) and grid == sorted(set(grid))


@pytest.mark.parametrize(
    "data", [{"layers": [0, 2], "heads": 4, "kv_heads": 1, "ffn": 100}, {"ffn": 10}, {}, {"layers": [3]}]
)
def test_dict_round_trip(data):
    assert Shape.from_dict(data).to_dict() == data
    assert Shape.from_dict(Shape.from_dict(data).to_dict()) == Shape.from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"layer": [0]}, "unknown field"),
        ({"layers": "0,1"}, "list of layer indices"),
        ({"ffn": "big"}, "shape.ffn must be an integer"),
        ({"heads": 2.5}, "shape.heads must be an integer"),
        ({"layers": [0, True]}, "integer"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_malformed_shape_dicts(data, message):
    with pytest.raises(AnyshapeError, match=message):
        Shape.from_dict(data)


def test_depth_without_supernet_is_a_clear_error():
    with pytest.raises(AnyshapeError, match="needs a supernet"):
        Shape.from_dict({"depth": 3}).resolve(GQA)


def test_heads_must_divide_hidden_where_the_config_requires_it():
    space = ShapeSpace("llama", 2, 8, 8, 4, 32, 48, heads_divide=32)
    assert sorted({h for h, _ in space.head_choices()}) == [1, 2, 4, 8]
    with pytest.raises(AnyshapeError, match=r"multiple of the number of heads; allowed heads: 1, 2, 4, 8"):
        Shape(heads=6).resolve(space)
