"""The real search problem end to end on a tiny model: supernet, table, search, export, extract, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from nas.cli import main
from profilers.environment import cpu_slug


@pytest.fixture(scope="module")
def setup(tok_model, tmp_path_factory, search_setup):
    root = tmp_path_factory.mktemp("search-e2e")
    search_setup(tok_model("llama"), root, "tiny-llama", 128)
    return root


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def search_args(root: Path, *extra):
    return ["search", root / "sn", "--device", cpu_slug(), "--runtime", "fake", "--tables", root / "tables", "--table", "tiny-llama",
            "--storage", f"sqlite:///{root / 'study.db'}", *extra]  # fmt: skip


def test_search_export_extract(capsys, setup):
    code, out, err = cli(capsys, *search_args(setup, "--trials", 10, "--study", "e2e", "--json"))
    assert code == 0, err
    result = json.loads(out)
    assert result["complete_trials"] == 10 and result["pareto"]
    code, out, err = cli(capsys, "export", "--study", "e2e", "--storage", f"sqlite:///{setup / 'study.db'}", "--out", setup / "front", "--json")
    assert code == 0, err
    configs = json.loads(out)["configs"]
    code, _, err = cli(capsys, "extract", configs[0], "--out", setup / "ckpt")
    assert code == 0, err
    model = transformers.AutoModelForCausalLM.from_pretrained(setup / "ckpt")
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--device", "no-such-device"], "unknown device" ),
        (["--storage", "not a url"], "not a database URL"),
        (["--workload", "prefill:b1"], "is not like"),
        (["--trials", "0"], "--trials"),
    ],
)
def test_bad_search_input(capsys, setup, extra, needle):
    args = search_args(setup, "--trials", 2, "--study", "bad")
    for i in range(0, len(extra), 2):  # later options override earlier ones
        args += [extra[i], extra[i + 1]]
    code, _, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_budget_no_shape_meets(capsys, setup):
    code, _, err = cli(capsys, *search_args(setup, "--trials", 4, "--study", "tight", "--latency-budget-ms", "1e-9"))
    assert code == 0, err
    code, _, err = cli(capsys, "export", "--study", "tight", "--storage", f"sqlite:///{setup / 'study.db'}", "--out", setup / "tight")
    assert code == 1 and "no shape met the budgets" in err


def test_decoder_search_takes_token_accuracy(capsys, setup):
    import optuna

    code, _, err = cli(capsys, *search_args(setup, "--trials", 4, "--study", "tokacc", "--metric", "token_accuracy", "--json"))
    assert code == 0, err
    study = optuna.load_study(study_name="tokacc", storage=f"sqlite:///{setup / 'study.db'}")
    assert study.user_attrs["accuracy_metric"] == "token_accuracy" and study.user_attrs["accuracy_direction"] == "maximize"
    assert all(0.0 <= t.values[0] <= 1.0 for t in study.trials)
    code, _, err = cli(capsys, *search_args(setup, "--trials", 4, "--study", "tokacc2", "--metric", "cosine"))
    assert code == 1 and "not a metric of decoders" in err and len(err.strip().splitlines()) == 1, err
