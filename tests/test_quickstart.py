"""The README's first command, end to end on MiniLM (slow: it calibrates a supernet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.quickstart import run_quickstart


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, gensim_wheel, capsys):
    lines: list[str] = []
    result = run_quickstart(tmp_path / "qs", trials=6, calibration_shapes=4, say=lines.append)
    assert result.pareto_configs >= 1 and result.best_config.is_file()
    assert (tmp_path / "qs" / "best" / "model.safetensors").is_file()
    config = yaml.safe_load(result.best_config.read_text())
    latency = next(iter(config["objectives"]["latency"].values()))
    assert latency["measured_ms"] > 0 and latency["predicted_ms"] <= result.budget_ms
    assert 0 < config["objectives"]["accuracy"]["measured"] <= 1.0
    assert any(line.startswith("search:") for line in lines)
    # it calibrated to this machine before searching, and verify compared the raw measurement with that prediction
    assert result.calibration is not None and result.calibration["k"] == 4
    assert latency["calibrated"] is True and latency["measured_protocol"].startswith("live")
    # the best shape's human-judged scores are printed beside the base model's
    assert set(result.task_scores) == {"simlex-999", "wordsim-353", "polarity-200"}
    assert all(-1 <= v["best"] <= 1 and -1 <= v["base"] <= 1 for v in result.task_scores.values())
    from nas.quickstart import SHIPPED_SUPERNETS

    assert result.trained == (SHIPPED_SUPERNETS["minilm"] / "adapters.safetensors").is_file()
    # a second run reuses the supernet and replaces the study
    again = run_quickstart(tmp_path / "qs", trials=4, calibration_shapes=3, say=lines.append)
    assert again.trials == 4 and any("reusing" in line for line in lines)
    # --json: one JSON document on stdout, nothing of the stages on stderr
    from nas.cli import main

    capsys.readouterr()  # what the runs above printed
    code = main(["quickstart", "--out", str(tmp_path / "qs"), "--trials", "4", "--calibration-shapes", "3", "--json"])
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert code == 0 and data["trials"] == 4 and data["speedup"] > 0 and Path(data["best_config"]).is_file(), out.err
    assert "reusing" not in out.err and "search" not in out.err
