"""Building a supernet on tiny models, the artifact round trip, and extraction from it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.config import BaseModelRef, SubnetConfig, SupernetRef
from nas.cuts import plan_cuts
from nas.errors import AnyshapeError
from nas.masking import masked_subnet
from nas.modeling import example_inputs, load_model, main_output
from nas.shape import Shape
from nas.supernet.artifact import Supernet
from nas.supernet.build import BuildConfig, build_supernet
from nas.supernet.calibration import CalibrationConfig
from nas.supernet.cut import compensation_shifts, extract_from_supernet
from nas.supernet.evaluate import SubnetEvaluator
from nas.supernet.width import compensated

SMALL = CalibrationConfig(num_calib=4, num_heldout=4, seq_len=16, batch_size=2, seed=0)


@pytest.fixture(scope="module")
def llama_supernet(tok_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sn") / "llama"
    config = BuildConfig(min_depth=2, beam=2, baselines=True, bias_compensation=True, calibration=SMALL)
    build_supernet(str(tok_model("llama")), out, config, progress=False)
    return out


def test_supernet_round_trips(llama_supernet: Path, tmp_path: Path) -> None:
    sn = Supernet.load(llama_supernet)
    assert sn.family == "llama" and sn.metric == "nll"
    assert set(sn.depth_tables) == {"dp", "drop-last", "block-influence"}
    dp = sn.depth_tables["dp"]
    assert [r["depth"] for r in dp.rows] == [2, 3, 4]
    assert dp.rows[-1]["layers"] == [0, 1, 2, 3]
    for row in dp.rows:
        assert len(row["layers"]) == row["depth"] and row["layers"] == sorted(row["layers"])
        assert row["heldout_loss"] > 0 and row["calib_loss"] > 0
    assert len(sn.calibration["calib_sha256"]) == 64 and sn.calibration["calib_sha256"] != sn.calibration["heldout_sha256"]
    copy = tmp_path / "copy"
    copy.mkdir()
    sn.save(copy)
    again = Supernet.load(copy)
    assert again == sn
    assert again.to_json() == sn.to_json()
    assert torch.equal(again.attn_mean, sn.attn_mean) and torch.equal(again.ffn_mean, sn.ffn_mean)
    assert again.sha256() == sn.sha256()


def test_dp_at_least_as_good_as_baselines_on_calibration(llama_supernet: Path) -> None:
    sn = Supernet.load(llama_supernet)
    for depth_row in sn.depth_tables["dp"].rows:
        for other in ("drop-last", "block-influence"):
            row = next(r for r in sn.depth_tables[other].rows if r["depth"] == depth_row["depth"])
            # the DP considers every single-layer removal; deeper cuts are not guaranteed, so compare at depth N-1
            if depth_row["depth"] == sn.space.num_layers - 1:
                assert depth_row["calib_loss"] <= row["calib_loss"] + 1e-12


def test_same_seed_same_artifact(tok_model: Callable[[str], Path], tmp_path: Path) -> None:
    config = BuildConfig(width_method="random", seed=5, calibration=SMALL)
    a = build_supernet(str(tok_model("llama")), tmp_path / "a", config, progress=False).supernet
    b = build_supernet(str(tok_model("llama")), tmp_path / "b", config, progress=False).supernet
    for name in ("supernet.json", "supernet.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.sha256() == b.sha256()
    other = BuildConfig(width_method="random", seed=6, calibration=CalibrationConfig(**{**SMALL.__dict__, "seed": 6}))
    c = build_supernet(str(tok_model("llama")), tmp_path / "c", other, progress=False).supernet
    assert c.orders != a.orders
    assert c.calibration["calib_sha256"] != a.calibration["calib_sha256"]


@pytest.mark.parametrize("name", ["llama", "qwen2", "bert"])
def test_orders_are_permutations(tok_model: Callable[[str], Path], tmp_path: Path, name: str) -> None:
    for method in ("fluctuation", "magnitude", "random"):
        sn = build_supernet(str(tok_model(name)), tmp_path / method, BuildConfig(width_method=method, calibration=SMALL),
                            progress=False).supernet
        sn.orders.validate(sn.space)
        for order in sn.orders.ffn:
            assert sorted(order) == list(range(sn.space.ffn_size))


def _compare(base_dir: Path, sn: Supernet, shape: dict, out: Path, *, compensate: bool) -> float:
    result = extract_from_supernet(sn.path, shape, out)
    model, family = load_model(base_dir)
    sub, _ = load_model(out)
    inputs: dict = example_inputs(family, int(model.config.vocab_size), 2, 9, seed=1)
    if family.kind == "decoder":
        inputs["use_cache"] = False
    cuts = plan_cuts(sn.space, sn.resolve_shape(shape), sn.orders)
    assert [c.layer for c in cuts] == list(result.shape.layers or ())
    shifts = compensation_shifts(sn, model, family, cuts) if compensate else {}
    with torch.no_grad(), compensated(model, family, shifts), masked_subnet(model, family, sn.space, cuts) as masked:
        want = main_output(family, masked(**inputs))
    with torch.no_grad():
        got = main_output(family, sub(**inputs))
    return float((got - want).abs().max())


def test_extracted_depth_shape_equals_masked_forward(tok_model: Callable[[str], Path], tmp_path: Path) -> None:
    sn = build_supernet(str(tok_model("llama")), tmp_path / "sn", BuildConfig(calibration=SMALL), progress=False).supernet
    shape = {"depth": 3, "heads": 4, "ffn": 24}
    assert _compare(tok_model("llama"), sn, shape, tmp_path / "out", compensate=False) <= 1e-5
    prov = json.loads((tmp_path / "out" / "anyshape_subnet.json").read_text())
    assert prov["config"]["supernet"]["sha256"] == sn.sha256()
    assert prov["shape"]["layers"] == list(sn.depth_tables["dp"].layers_for(3))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_bias_compensation_extracts_to_stock_model(tok_model: Callable[[str], Path], tmp_path: Path, name: str) -> None:
    config = BuildConfig(bias_compensation=True, calibration=SMALL)
    sn = build_supernet(str(tok_model(name)), tmp_path / "sn", config, progress=False).supernet
    shape = {"depth": 3, "ffn": 24} if name == "bert" else {"depth": 3, "heads": 4, "kv_heads": 2, "ffn": 24}
    assert _compare(tok_model(name), sn, shape, tmp_path / "out", compensate=True) <= 1e-5
    # the compensation is real: without it the extracted model differs from the masked forward
    assert _compare(tok_model(name), sn, shape, tmp_path / "out2", compensate=False) > 1e-4


def test_bias_compensation_refused_without_output_bias(tok_model: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(AnyshapeError, match="bias compensation needs a bias"):
        build_supernet(str(tok_model("qwen2")), tmp_path / "sn", BuildConfig(bias_compensation=True, calibration=SMALL), progress=False)


def test_cached_evaluation_equals_masked_full_forward(tok_model: Callable[[str], Path]) -> None:
    from nas.supernet.calibration import prepare_data

    for name in ("mistral", "bert"):
        model, family = load_model(tok_model(name))
        space = family.space(model.config.to_dict())
        data = prepare_data(tok_model(name), family, SMALL, int(model.config.vocab_size))
        ev = SubnetEvaluator(model, family, space, data.calib)
        for layers in [(0, 2, 3), (1, 3), (3,), (0, 1, 2, 3)]:
            cuts = plan_cuts(space, Shape(layers=layers).resolve(space))
            assert ev.score(layers).loss == pytest.approx(ev.score(layers, cuts=cuts).loss, rel=1e-6, abs=1e-9)


def test_mismatched_base_hash_is_a_clear_error(llama_supernet: Path, tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    from conftest import build_tiny

    other = build_tiny("llama", tmp_path / "other", seed=1)
    with pytest.raises(AnyshapeError, match="rebuild the supernet for these weights"):
        extract_from_supernet(llama_supernet, {"depth": 2}, tmp_path / "out", model=str(other))
    code = main(["extract", "--supernet", str(llama_supernet), "--model", str(other), "--shape", '{"depth": 2}', "--out", str(tmp_path / "o")])
    assert code == 1


def test_bad_depth_and_min_depth_are_clear_errors(llama_supernet: Path, tok_model: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(AnyshapeError, match=r"shape\.depth is 1; .*covers 2\.\.4"):
        extract_from_supernet(llama_supernet, {"depth": 1}, tmp_path / "o")
    with pytest.raises(AnyshapeError, match=r"shape\.depth or shape\.layers, not both"):
        extract_from_supernet(llama_supernet, {"depth": 2, "layers": [0, 1]}, tmp_path / "o")
    with pytest.raises(AnyshapeError, match=r"min_depth is 5; allowed range 1\.\.4"):
        build_supernet(str(tok_model("llama")), tmp_path / "x", BuildConfig(min_depth=5, calibration=SMALL), progress=False)
    with pytest.raises(AnyshapeError, match="depth_method"):
        BuildConfig(depth_method="shortest")
    with pytest.raises(AnyshapeError, match="num_calib"):
        CalibrationConfig(num_calib=0)
    assert not (tmp_path / "x").exists()


def test_cli_build_inspect_extract_and_config(tok_model: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sn_dir = tmp_path / "sn"
    base = str(tok_model("llama"))
    assert main(["supernet", "build", base, "--out", str(sn_dir), "--num-calib", "4", "--num-heldout", "4",
                 "--seq-len", "16", "--min-depth", "2", "--no-progress"]) == 0
    assert "depth   2" in capsys.readouterr().out
    assert main(["inspect", str(sn_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "supernet" and info["default_depth_table"] == "dp"
    assert main(["inspect", str(sn_dir)]) == 0
    assert "depth table dp" in capsys.readouterr().out
    assert main(["extract", "--supernet", str(sn_dir), "--shape", '{"depth": 3, "ffn": 24}', "--out", str(tmp_path / "a")]) == 0
    sn = Supernet.load(sn_dir)
    config = SubnetConfig(
        base_model=BaseModelRef(base), supernet=SupernetRef(str(sn_dir), sn.sha256()),
        shape=Shape.from_dict({"depth": 3, "ffn": 24}),
    )
    config.save(tmp_path / "c.yaml")
    assert main(["extract", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    bad = SubnetConfig(base_model=BaseModelRef(base), supernet=SupernetRef(str(sn_dir), "0" * 64), shape=config.shape)
    bad.save(tmp_path / "bad.yaml")
    assert main(["extract", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "c")]) == 1
    assert "rebuilt or replaced" in capsys.readouterr().err
    assert main(["supernet", "build", base, "--out", str(tmp_path / "z"), "--min-depth", "9", "--no-progress"]) == 1
    assert "min_depth is 9" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_build_under_two_minutes(tmp_path: Path) -> None:
    result = build_supernet("minilm", tmp_path / "sn", BuildConfig(), progress=False)
    assert result.seconds < 120
    rows = result.supernet.depth_tables["dp"].rows
    assert [r["depth"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["heldout"]["cosine"] == pytest.approx(1.0)
    losses = [r["heldout_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True)  # more layers, closer to the full model


def test_score_model_of_the_base_equals_its_full_score(tok_model: Callable[[str], Path]) -> None:
    model, family = load_model(str(tok_model("llama")))
    from nas.hub import load_config_dict
    from nas.supernet.calibration import prepare_data

    space = family.space(load_config_dict(tok_model("llama")))
    data = prepare_data(tok_model("llama"), family, SMALL, 96)
    evaluator = SubnetEvaluator(model, family, space, data.heldout)
    assert abs(evaluator.score_model(model).loss - evaluator.full_score().loss) <= 1e-9


def test_the_supernet_carries_its_held_out_rows(tok_model: Callable[[str], Path], tmp_path: Path) -> None:
    """Built on a text file that is gone where it is used, a supernet still scores shapes on its held-out
    rows (stored in supernet.safetensors); rows that do not match the record are refused; a supernet
    saved without them rebuilds them from its record as before."""
    import shutil

    from nas.families import family_for
    from nas.supernet.calibration import heldout_batches, prepare_data, tokens_sha256

    model = tok_model("bert")
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(f"paragraph {i} says something about topic {i % 7} and then some more words." for i in range(40)))
    config = CalibrationConfig(calib_text=str(text), num_calib=4, num_heldout=6, seq_len=16, batch_size=4, seed=0)
    out = tmp_path / "sn"
    build_supernet(str(model), out, BuildConfig(calibration=config), progress=False)
    family = family_for(json.loads((model / "config.json").read_text()))
    expected = prepare_data(model, family, config, 1 << 30).heldout
    text.unlink()  # the calibration text is not where the supernet is used
    sn = Supernet.load(out)
    assert sn.heldout_inputs is not None and tokens_sha256(dict(sn.heldout_inputs)) == sn.calibration["heldout_sha256"]
    got = heldout_batches(sn, model, family, 1 << 30)
    assert len(got) == len(expected) >= 1 and all(torch.equal(a[k], b[k]) for a, b in zip(got, expected) for k in a)
    tampered = Supernet.load(out)
    object.__setattr__(tampered, "heldout_inputs", {k: v.flip(0) for k, v in sn.heldout_inputs.items()})
    with pytest.raises(AnyshapeError, match="do not match its record"):
        heldout_batches(tampered, model, family, 1 << 30)
    old = Supernet.load(out)
    object.__setattr__(old, "heldout_inputs", None)  # a supernet from before the rows were stored
    with pytest.raises(AnyshapeError, match="does not exist"):
        heldout_batches(old, model, family, 1 << 30)  # it rebuilds them from the text, which is gone
    shutil.rmtree(out)
