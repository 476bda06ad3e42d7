"""Few-shot calibration: the correction, the record, this machine only, and a fake device with a known scale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nas.errors import AnyshapeError
from nas.families import family_for
from nas.predictor.api import predict_latency, predictor_for
from nas.predictor.calibration import (
    KINDS,
    CalibratedPredictor,
    CalibrationRecord,
    Correction,
    calibrate,
    calibration_path,
    choose_correction,
    find_calibration,
    fit_correction,
    leave_one_out,
    list_calibrations,
    load_calibration_file,
    machine_identity,
)
from nas.workload import Workload
from profilers.blocks import ModelSpec
from profilers.environment import cpu_slug
from profilers.fake import FakeProfiler
from profilers.protocol import ProtocolConfig
from profilers.run import profile
from profilers.testing import TINY_LLAMA
from profilers.workload import GridConfig

CONFIG = {**TINY_LLAMA, "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 256}
PREFILL = Workload("prefill", 1, 16)
DECODE = Workload("decode", 1, 16)
RT = "fake"  # the fake profiler files its tables under its own runtime name
FAST = ProtocolConfig(warmup=0, repeats=3, min_repeats=3)
#: The fake device the table was "measured" on, and this machine: the same roofline, 1.3x slower in every term.
TABLE_SPEED = dict(gflops=50.0, bandwidth_gb_s=20.0, overhead_ms=0.05)
SLOWER = dict(gflops=50.0 / 1.3, bandwidth_gb_s=20.0 / 1.3, overhead_ms=0.05 * 1.3)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake-profiler table for this machine's slug, and the same table filed under another CPU's slug."""
    out = tmp_path_factory.mktemp("tables")
    spec = ModelSpec("tiny", family_for(CONFIG), CONFIG)
    grid = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=4, whole_model_samples=60, seed=2)
    profiler = FakeProfiler(FAST, noise_cv=0.01, seed=1, **TABLE_SPEED)
    profile(spec, cpu_slug(), RT, out, grid=grid, profiler=profiler, progress=False, bandwidth_buffer_mib=8)
    other = out / "cpu-other-kind-2c" / RT
    shutil.copytree(out / cpu_slug() / RT, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["device"] = "cpu-other-kind-2c"
    for entry in meta["tables"].values():
        entry["device"] = "cpu-other-kind-2c"
    (other / "meta.json").write_text(json.dumps(meta))
    for path in other.glob("*.predictor.*"):
        path.unlink()
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    path.write_text(json.dumps(CONFIG))
    return str(path)


def slower_device(seed: int = 3, noise: float = 0.02) -> FakeProfiler:
    return FakeProfiler(FAST, noise_cv=noise, seed=seed, **SLOWER)


def run_calibration(tables: Path, model_file: str, **kwargs: object) -> CalibrationRecord:
    kwargs = {"shapes": 8, "workloads": [PREFILL, DECODE], "progress": False, "profiler": slower_device(), **kwargs}
    return calibrate(cpu_slug(), RT, model_file, tables_root=tables, **kwargs).record  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the correction


def test_fit_recovers_a_known_level_and_slope() -> None:
    prior = np.geomspace(1.0, 40.0, 10)
    measured = np.exp(np.log(1.5) + 1.1 * (np.log(prior) - np.log(prior).mean()) + np.log(prior).mean())
    level = fit_correction(prior, prior * 1.5, "level")
    assert level.scale_at_pivot == pytest.approx(1.5, rel=1e-3)
    assert np.allclose(level.apply(prior), prior * 1.5, rtol=1e-3)
    both = fit_correction(prior, measured, "level+slope")
    assert both.slope == pytest.approx(1.1, abs=0.02) and np.allclose(both.apply(prior), measured, rtol=0.02)
    assert np.array_equal(fit_correction(prior, measured, "none").apply(prior), prior)


@pytest.mark.parametrize("seed", range(20))
def test_the_chosen_correction_is_never_worse_than_none_on_leave_one_out(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prior = np.geomspace(2.0, 50.0, int(rng.integers(3, 21)))
    scale = float(rng.choice([1.0, rng.uniform(0.6, 1.8)]))  # some devices match the table, some do not
    measured = prior * scale * np.exp(rng.normal(0, float(rng.uniform(0.0, 0.15)), len(prior)))
    correction, scores = choose_correction(prior, measured)
    assert set(scores) <= set(KINDS) and "none" in scores
    assert scores[correction.kind] <= scores["none"]
    assert scores["none"] == pytest.approx(float(np.mean(np.abs(prior / measured - 1))), abs=1e-6)


def test_leave_one_out_does_not_see_the_point_it_scores() -> None:
    prior = np.array([1.0, 2.0, 4.0, 8.0])
    measured = prior * np.array([1.2, 1.2, 1.2, 2.4])  # the last one is an outlier
    loo = leave_one_out(prior, measured, "level")
    assert loo[-1] == pytest.approx(1.2 / 2.4 - 1, abs=1e-3)  # predicted with the others' level only


def test_too_few_shapes_and_out_of_range_corrections_are_refused() -> None:
    with pytest.raises(AnyshapeError, match="at least 3"):
        choose_correction([1.0, 2.0], [1.1, 2.2])
    with pytest.raises(AnyshapeError, match="out of range"):
        Correction("level+slope", 0.0, 5.0, 0.0)
    with pytest.raises(AnyshapeError, match="kind"):
        Correction("quadratic")


# --------------------------------------------------------------------------- a fake device with a known scale


def test_calibration_on_a_device_with_a_known_scale(tables: Path, model_file: str) -> None:
    record = run_calibration(tables, model_file)
    for name in (PREFILL.name, DECODE.name):
        fit = record.workloads[name]
        assert fit.k == 8 and fit.correction.kind != "none"
        assert fit.correction.scale_at_pivot == pytest.approx(1.3, rel=0.05)
        summary = fit.summary()
        assert summary["mape_before"] > 0.2  # the table is 1.3x too fast here
        assert summary["mape_after_loo"] < 0.06 and summary["mape_after_loo"] < summary["mape_before"]
        assert max(fit.shapes, key=lambda s: s["depth"])["depth"] == CONFIG["num_hidden_layers"]  # the full model is one
        assert len({tuple(s.values()) for s in fit.shapes}) == 8  # distinct shapes
        prior = sorted(fit.prior_ms)
        assert prior[-1] / prior[0] > 2  # they span the predicted range (overhead-bound tiny shapes: 0.05-0.13 ms)
    # the predictor for this machine is now calibrated, and 1.3x slower than the table's
    plain, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=tables, calibrated=False)
    calibrated, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=tables)
    assert isinstance(calibrated, CalibratedPredictor) and not isinstance(plain, CalibratedPredictor)
    shape = {"depth": 3, "ffn": 128}
    on = predict_latency(cpu_slug(), RT, model_file, shape, PREFILL, tables_root=tables)
    off = predict_latency(cpu_slug(), RT, model_file, shape, PREFILL, tables_root=tables, calibrated=False)
    assert on["calibrated"] is True and on["calibration"]["id"] == record.id and off["calibrated"] is False
    assert on["latency_ms"] / off["latency_ms"] == pytest.approx(1.3, rel=0.08)


def test_a_re_measured_table_voids_its_calibration(tables: Path, model_file: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    copy = tmp_path / "tables"
    shutil.copytree(tables, copy)
    run_calibration(copy, model_file, shapes=4, workloads=[PREFILL])
    assert isinstance(predictor_for(cpu_slug(), RT, model_file, tables_root=copy)[0], CalibratedPredictor)
    # a workload the calibration did not cover keeps the table's prediction, and says so
    assert predict_latency(cpu_slug(), RT, model_file, {"depth": 2}, DECODE, tables_root=copy)["calibrated"] is False
    assert predict_latency(cpu_slug(), RT, model_file, {"depth": 2}, PREFILL, tables_root=copy)["calibrated"] is True
    csv_path = copy / cpu_slug() / RT / "tiny.csv"
    meta_path = csv_path.parent / "meta.json"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:-1]) + "\n")  # "re-measured": one row fewer
    meta = json.loads(meta_path.read_text())
    meta["tables"]["tiny"]["rows"] -= 1
    meta_path.write_text(json.dumps(meta))
    predictor, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=copy)
    assert not isinstance(predictor, CalibratedPredictor)
    assert "stale" in capsys.readouterr().err


# --------------------------------------------------------------------------- the record and this machine


def test_record_round_trip_and_edits_refused(tables: Path, model_file: str, tmp_path: Path) -> None:
    record = run_calibration(tables, model_file, shapes=4, workloads=[PREFILL])
    path = record.save(tmp_path / "cal.json")
    again = CalibrationRecord.load(path)
    assert again.id == record.id and again.to_dict() == record.to_dict()
    assert again.workloads[PREFILL.name].correction == record.workloads[PREFILL.name].correction
    data = json.loads(path.read_text())
    data["workloads"][PREFILL.name]["measured_ms"][0] *= 2
    path.write_text(json.dumps(data))
    with pytest.raises(AnyshapeError, match="edited"):
        CalibrationRecord.load(path)
    path.write_text("{not json")
    with pytest.raises(AnyshapeError, match="unreadable"):
        CalibrationRecord.load(path)
    path.write_text(json.dumps({"format": "anyshape/calibration-v1", "device": "x"}))
    with pytest.raises(AnyshapeError, match="malformed"):
        CalibrationRecord.load(path)


def test_a_calibration_from_another_machine_is_refused(tables: Path, model_file: str, tmp_path: Path) -> None:
    record = run_calibration(tables, model_file, shapes=4, workloads=[PREFILL])
    assert find_calibration(cpu_slug(), RT, "tiny")[0] is not None
    record.machine = {**machine_identity(), "hostname": "elsewhere", "machine_id": "0" * 32}
    stored = record.save(calibration_path(cpu_slug(), RT, "tiny"))
    found, why = find_calibration(cpu_slug(), RT, "tiny")
    assert found is None and why is not None and "another machine" in why
    predictor, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=tables)
    assert not isinstance(predictor, CalibratedPredictor)  # ignored, with a note
    with pytest.raises(AnyshapeError, match=r"does not apply here.*another machine"):
        load_calibration_file(stored)
    with pytest.raises(AnyshapeError, match="another machine"):
        predict_latency(cpu_slug(), RT, model_file, {"depth": 2}, PREFILL, tables_root=tables, calibration=stored)
    listed = list_calibrations()
    assert len(listed) == 1 and listed[0]["status"].startswith("not for this machine")


# --------------------------------------------------------------------------- transfer to a device with no table


def test_transfer_from_another_devices_table(tables: Path, model_file: str, tmp_path: Path) -> None:
    """This machine has no table of its own: the other CPU's table plus K measurements is its predictor."""
    root = tmp_path / "tables"
    shutil.copytree(tables / "cpu-other-kind-2c", root / "cpu-other-kind-2c")
    with pytest.raises(AnyshapeError, match="--prior auto"):
        predictor_for(cpu_slug(), RT, model_file, tables_root=root)
    with pytest.raises(AnyshapeError, match=r"no latency table .* to calibrate; calibrate from another device's table"):
        run_calibration(root, model_file, prior="table")
    record = run_calibration(root, model_file, prior="auto")
    assert record.prior["kind"] == "table" and record.prior["device"] == "cpu-other-kind-2c"
    assert [c["prior"].split(" ")[0] for c in record.candidates] == ["cpu-other-kind-2c/fake/tiny", "roofline"]
    predictor, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=root)
    assert isinstance(predictor, CalibratedPredictor)
    assert record.workloads[PREFILL.name].summary()["mape_after_loo"] < 0.06
    roofline = run_calibration(root, model_file, prior="roofline", shapes=5, workloads=[PREFILL])
    assert roofline.prior["kind"] == "roofline" and roofline.workloads[PREFILL.name].correction.kind in KINDS


def test_bad_calibrate_arguments_are_one_line_errors(tables: Path, model_file: str) -> None:
    with pytest.raises(AnyshapeError, match="--shapes is 2"):
        run_calibration(tables, model_file, shapes=2)
    with pytest.raises(AnyshapeError, match="--prior 'nowhere'"):
        run_calibration(tables, model_file, prior="nowhere")
    with pytest.raises(AnyshapeError, match="not this machine"):
        calibrate("cpu-some-other-cpu-2c", RT, model_file, tables_root=tables, progress=False)


def test_calibrate_cli_and_listing(tables: Path, model_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    assert main(["calibrations", "list"]) == 0
    assert "no calibrations under" in capsys.readouterr().out
    assert main(["calibrate", "--device", cpu_slug(), "--model", model_file, "--tables", str(tables), "--shapes", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--shapes is 1" in err and len(err.splitlines()) == 1


def test_search_workers_refuse_a_different_calibration() -> None:
    from nas.search.run import _check_same_calibration

    _check_same_calibration(None, None)
    _check_same_calibration({"id": "a"}, {"id": "a"})
    with pytest.raises(AnyshapeError, match=r"calibration .*none.* is not the study's .*a"):
        _check_same_calibration({"id": "a"}, None)


def test_device_command_says_which_tables_and_calibrations_apply(tables: Path, model_file: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from nas.cli import main
    from nas.cli.device_cmd import device_report

    assert main(["device", "--tables", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert f"this machine is {cpu_slug()}" in out and "no tables folder" in out and "anyshape calibrate" in out
    run_calibration(tables, model_file, shapes=4, workloads=[PREFILL])
    report = device_report(tables)
    assert report["device"] == cpu_slug() and [t["name"] for t in report["tables"]] == ["tiny"]
    assert report["calibration_priors"] == [f"cpu-other-kind-2c/{RT}/tiny"]
    assert [c["table"] for c in report["calibrations"]] == ["tiny"]


def test_by_default_each_phase_calibrates_the_table_s_main_workload(tmp_path: Path, model_file: str) -> None:
    """A table with more workloads (batch, lengths) calibrates, unasked, the one per phase it has most shapes of:
    a minute on the user's machine, not one per workload; the others are named with --workload."""
    spec = ModelSpec("tiny", family_for(CONFIG), CONFIG)
    grid = GridConfig(workloads=("prefill:b1:s16", "prefill:b4:s16", "decode:b1:c16", "decode:b2:c32"), ffn_steps=4,
                      whole_model_samples=30, other_workload_samples=8, seed=2)
    profiler = FakeProfiler(FAST, noise_cv=0.01, seed=1, **TABLE_SPEED)
    profile(spec, cpu_slug(), RT, tmp_path, grid=grid, profiler=profiler, progress=False, bandwidth_buffer_mib=8)
    record = calibrate(cpu_slug(), RT, model_file, tables_root=tmp_path, table="tiny", shapes=6, progress=False,
                       profiler=slower_device(), save=False).record
    assert sorted(record.workloads) == ["decode:b1:c16", "prefill:b1:s16"]
    predictor, _ = predictor_for(cpu_slug(), RT, model_file, tables_root=tmp_path, table="tiny",
                                 calibration=None, calibrated=False)
    from nas.predictor.calibration import CalibratedPredictor, is_calibrated

    wrapped = CalibratedPredictor(predictor, record)
    assert is_calibrated(wrapped, Workload("prefill", 1, 16)) and not is_calibrated(wrapped, Workload("prefill", 4, 16))
