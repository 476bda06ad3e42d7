"""The command line: one-line errors, non-zero exit, no traceback, no partial output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main
from nas.config import BaseModelRef, SubnetConfig
from nas.hub import weights_sha256
from nas.shape import Shape


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, needle):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("anyshape: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err


def no_leftovers(parent: Path):
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and "partial" in p.name] == []


@pytest.fixture
def gpt2_dir(tmp_path):
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2}))
    return d


def test_inspect_json(capsys, tiny_model):
    code, out, _ = run(capsys, "inspect", str(tiny_model("qwen2")), "--json")
    info = json.loads(out)
    assert code == 0 and info["family"] == "qwen2" and info["kv_heads"] == 2 and info["heads"] == 8
    assert info["shape_space"]["head_choices"][0] == [1, 1] and len(info["weights_sha256"]) == 64
    assert info["parameters"] > 0


def test_inspect_minilm_alias_table(capsys):
    code, out, _ = run(capsys, "inspect", "minilm")
    assert code == 0 and "22,713,216" in out and "bert" in out


def test_extract_with_shape_and_config_round_trip(capsys, tiny_model, tmp_path):
    base = tiny_model("llama")
    code, out, err = run(capsys, "extract", "--model", str(base), "--shape", '{"layers": [0, 3], "heads": 4, "ffn": 24}', "--out", str(tmp_path / "a"), "--json")
    assert code == 0, err
    assert json.loads(out)["shape"] == {"layers": [0, 3], "heads": 4, "kv_heads": 2, "ffn": 24}
    config = SubnetConfig(BaseModelRef(str(base), weights_sha256(base)), Shape(layers=(0, 3), heads=4, ffn=24))
    config.save(tmp_path / "subnet.yaml")
    code, _, err = run(capsys, "extract", str(tmp_path / "subnet.yaml"), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_shape_from_file(capsys, tiny_model, tmp_path):
    (tmp_path / "shape.yaml").write_text("layers: [1]\nffn: 8\n")
    code, _, err = run(capsys, "extract", "--model", str(tiny_model("bert")), "--shape", str(tmp_path / "shape.yaml"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "config.json").read_text())["num_hidden_layers"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/no/such/model", "--shape", "{}"], "not found"),
        (["--model", "{tiny}", "--shape", '{"layers": []}'], "depth 0"),
        (["--model", "{tiny}", "--shape", '{"heads": 3}'], "not a whole number of KV groups"),
        (["--model", "{tiny}", "--shape", '{"heads": 3, "kv_heads": 2}'], "must be one of 2, 4, 6, 8"),
        (["--model", "{tiny}", "--shape", '{"ffn": 49}'], "allowed range 1..48"),
        (["--model", "{tiny}", "--shape", '{"ffn": 4'], "not valid JSON"),
        (["--model", "{tiny}", "--shape", "nofile.json"], "neither"),
        (["--model", "{tiny}"], "both --model and --shape"),
    ],
)
def test_bad_extract_input(capsys, tiny_model, tmp_path, args, needle):
    args = [a.replace("{tiny}", str(tiny_model("qwen2"))) for a in args]
    code, _, err = run(capsys, "extract", *args, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_unsupported_architecture_lists_supported(capsys, gpt2_dir, tmp_path):
    code, _, err = run(capsys, "extract", "--model", str(gpt2_dir), "--shape", "{}", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "unsupported architecture: model_type 'gpt2' (GPT2LMHeadModel); supported model types: bert, llama")
    code, _, err = run(capsys, "inspect", str(gpt2_dir))
    assert_one_line_error(code, err, "supported model types")


def test_wrong_sha256_in_config(capsys, tiny_model, tmp_path):
    SubnetConfig(BaseModelRef(str(tiny_model("bert")), "0" * 64), Shape(layers=(0,))).save(tmp_path / "c.json")
    code, _, err = run(capsys, "extract", str(tmp_path / "c.json"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "this config was made for other weights")
    assert not (tmp_path / "o").exists()


def test_unwritable_out(capsys, tiny_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run(capsys, "extract", "--model", str(tiny_model("bert")), "--shape", "{}", "--out", str(blocker / "sub" / "out"))
    assert_one_line_error(code, err, "cannot create directory")


def test_existing_out_is_kept(capsys, tiny_model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run(capsys, "extract", "--model", str(tiny_model("bert")), "--shape", "{}", "--out", str(out))
    assert_one_line_error(code, err, "already exists")
    assert (out / "precious.txt").read_text() == "keep me"


def test_failed_extraction_leaves_nothing(monkeypatch, capsys, tiny_model, tmp_path):
    import nas.onnx_export
    from nas.errors import AnyshapeError

    def broken(*args, **kwargs):
        raise AnyshapeError("ONNX export failed for test")

    monkeypatch.setattr(nas.onnx_export, "export_onnx", broken)
    code, _, err = run(capsys, "extract", "--model", str(tiny_model("bert")), "--shape", "{}", "--out", str(tmp_path / "o"), "--onnx")
    assert_one_line_error(code, err, "ONNX export failed")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


def test_hub_id_unreachable_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "inspect", "no-such-org/no-such-model")
    assert_one_line_error(code, err, "cannot fetch hub model 'no-such-org/no-such-model'")


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, in a fresh process: exit status and stderr as a user sees them."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "nas.cli", "extract", "--model", "minilm", "--shape", '{"layers": []}', "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "anyshape: error: shape.layers is empty (depth 0); depth must be in 1..6"
    help_proc = subprocess.run([sys.executable, "-m", "nas.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert help_proc.returncode == 0 and "extract" in help_proc.stdout


@pytest.mark.parametrize("argv", [["nosuch"], ["extract", "--bogus"], ["predictor", "fit"]])
def test_usage_errors_have_no_traceback(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and ("No such" in err or "Missing option" in err)


@pytest.mark.parametrize("module", ["uvicorn", "fastapi"])
def test_serve_without_the_service_extra_names_it(capsys, monkeypatch, module):
    """pip install anyshape without [service], then anyshape serve: one line naming the extra, no traceback."""
    import sys

    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.") or m.startswith(("nas.service.app", "nas.service.routes"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError, as when it is not installed
    code = main(["serve", "--read-only", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        f"anyshape: error: this needs the optional package {module}, which is not installed: pip install 'anyshape[service]'"]


@pytest.mark.parametrize(("module", "extra", "argv"), [
    ("optuna_dashboard", "dashboard", ["dashboard", "--storage", "sqlite:///{tmp}/s.db", "--port", "0"]),
    ("psycopg", "postgres", ["export", "--study", "s", "--storage", "postgresql://postgres@127.0.0.1:5432/test"]),
])
def test_every_missing_extra_is_one_line_naming_it(capsys, monkeypatch, tmp_path, module, extra, argv):
    """The dashboard without [dashboard], a PostgreSQL storage without [postgres]: one line naming the extra."""
    import sys

    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        f"anyshape: error: this needs the optional package {module}, which is not installed: pip install 'anyshape[{extra}]'"]


def test_other_missing_modules_stay_bugs(monkeypatch):
    from nas.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("no", name="not_an_extra")) is None
    assert "anyshape[postgres]" in (missing_extra(ModuleNotFoundError("no", name="psycopg.pq")) or "")
