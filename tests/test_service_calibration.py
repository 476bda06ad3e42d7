"""The service says whether its latencies were calibrated to the searching machine (``anyshape calibrate``).

No calibration is measured: the study attribute a calibrated search records is set on a small fake study.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from test_service_support import DEVICE, FAKE, TOKEN, auth, run_body, server_thread

from nas.search import SearchConfig, run_search
from nas.search.storage import load_study
from nas.service import ServiceSettings
from nas.service.runs import WorkerSettings, search_config

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = {"id": "cal-0123abcd", "created": "2026-12-03T10:00:00+00:00", "prior": "fake table",
               "workloads": {"prefill:b1:s128": {"k": 8}}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two fake studies of 12 trials: ``cal`` records a calibration (as a calibrated search does), ``plain`` none."""
    root = tmp_path_factory.mktemp("cal-studies")
    for name in ("cal", "plain"):
        run_search(SearchConfig(study=name, trials=12, factory=FAKE, studies_dir=str(root), seed=5), progress=False)
    load_study(f"sqlite:///{root / 'cal' / 'study.db'}", "cal").set_user_attr("latency_calibration", CALIBRATION)
    return root


@pytest.fixture(scope="module")
def url(studies: Path):
    settings = ServiceSettings(studies_dir=str(studies), tables_root=str(REPO / "latency_tables"), token=TOKEN, workers=0,
                               db=f"sqlite:///{studies / 'service.db'}", cache_ttl_s=0.5)
    with server_thread(settings) as base:
        yield base


def recommend(url: str, study: str) -> dict:
    body = {"device": DEVICE, "runtime": "torch", "workload": "prefill:b1:s128", "latency_budget_ms": 1e6, "study": study}
    r = httpx.post(f"{url}/recommend", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_calibrated_study_says_so_in_studies_pareto_and_recommend(url):
    listed = {s["name"]: s for s in httpx.get(f"{url}/studies").json()}
    assert listed["cal"]["latency_calibrated"] is True and listed["cal"]["latency_calibration_id"] == "cal-0123abcd"
    detail = httpx.get(f"{url}/studies/cal").json()
    assert detail["latency_calibrated"] is True and detail["pareto"]
    assert {(p["latency_calibrated"], p["latency_calibration_id"]) for p in detail["pareto"]} == {(True, "cal-0123abcd")}
    got = recommend(url, "cal")
    assert got["found"] is True and got["latency_calibrated"] is True and got["latency_calibration_id"] == "cal-0123abcd"
    assert any("calibrated on the searching machine (calibration cal-0123abcd)" in reason for reason in got["reasons"])
    assert got["config"]["objectives"]["latency"][f"{DEVICE}/torch/prefill:b1:s128"]["calibration"] == "cal-0123abcd"
    download = yaml.safe_load(httpx.get(f"{url}{got['config_url']}").text)
    assert download["objectives"]["latency"][f"{DEVICE}/torch/prefill:b1:s128"]["calibrated"] is True


def test_a_study_without_a_calibration_says_not_calibrated(url):
    listed = {s["name"]: s for s in httpx.get(f"{url}/studies").json()}
    assert listed["plain"]["latency_calibrated"] is False and listed["plain"]["latency_calibration_id"] is None
    detail = httpx.get(f"{url}/studies/plain").json()
    assert detail["pareto"] and not any(p["latency_calibrated"] for p in detail["pareto"])
    got = recommend(url, "plain")
    assert got["found"] is True and got["latency_calibrated"] is False and got["latency_calibration_id"] is None
    assert not any("calibrat" in reason for reason in got["reasons"])
    # nothing found: nothing calibrated either
    none = httpx.post(f"{url}/recommend", json={"device": DEVICE, "runtime": "torch", "latency_budget_ms": 1e-9}).json()
    assert none["found"] is False and none["latency_calibrated"] is False


def test_a_run_records_calibrated_and_passes_it_to_its_factory(url, tmp_path):
    r = httpx.post(f"{url}/runs", json=run_body("cal-run", 2), headers=auth())
    assert r.status_code == 202, r.text
    assert r.json()["config"]["calibrated"] is True  # the default: this machine's calibration where one applies
    r = httpx.post(f"{url}/runs", json=run_body("raw-run", 2, calibrated=False), headers=auth())
    assert r.status_code == 202, r.text
    assert r.json()["config"]["calibrated"] is False
    r = httpx.post(f"{url}/runs", json=run_body("twice", 2, factory_args={"calibrated": False}), headers=auth())
    assert r.status_code == 422 and "own field" in str(r.json()["detail"])
    settings = WorkerSettings(db_url="sqlite://", studies_dir=str(tmp_path), search_storage=None, heartbeat_s=1,
                              stale_after_s=3, max_attempts=2)
    stored = {k: v for k, v in run_body("s", 2, factory_args={"delay_s": 0.0}).items() if k != "calibrated"}
    assert search_config({**stored, "calibrated": False}, settings).factory_args == {"delay_s": 0.0, "calibrated": False}
    # a run queued before the field existed: its factory keeps the table's predictions, as its study did
    assert search_config(stored, settings).factory_args == {"delay_s": 0.0}
