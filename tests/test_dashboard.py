"""optuna-dashboard opens an anyshape study and shows its trials and their attributes over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nas.search import SearchConfig, run_search


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dashboard_reads_the_study(tmp_path):
    cfg = SearchConfig(study="dash", trials=6, factory="nas.search.testing:fake_problem", studies_dir=str(tmp_path))
    run_search(cfg, progress=False)
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), cfg.storage_url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 60
        studies = None
        while time.time() < deadline and studies is None:
            try:
                studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer within 60 s"
        (study,) = [s for s in studies if s["study_name"] == "dash"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0")
        trials = detail["trials"]
        assert len(trials) == 6
        attrs = {a["key"] for a in trials[0]["user_attrs"]}
        assert {"shape", "predicted_latency_ms", "latency_source", "supernet_sha256"} <= attrs
        assert detail["objective_names"] == ["fake_score", "latency_ms"] and len(detail["best_trials"]) >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
