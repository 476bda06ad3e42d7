"""Latency predictor: fit on a (fake-profiler) table, batch prediction, portability, the bound flag."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas.errors import AnyshapeError
from nas.families import family_for
from nas.predictor import evaluate_predictor, fit_predictor, load_predictor
from nas.shape import Shape
from nas.workload import Workload
from profilers.blocks import ModelSpec
from profilers.fake import FakeProfiler
from profilers.protocol import ProtocolConfig
from profilers.run import profile
from profilers.testing import TINY_LLAMA
from profilers.workload import GridConfig

CONFIG = {**TINY_LLAMA, "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 256}
PREFILL = Workload("prefill", 1, 16)
DECODE = Workload("decode", 1, 16)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    spec = ModelSpec("tiny", family_for(CONFIG), CONFIG)
    profiler = FakeProfiler(ProtocolConfig(warmup=0, repeats=3, min_repeats=3), noise_cv=0.01, overhead_ms=0.05, seed=1)
    grid = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=4, whole_model_samples=80, seed=2)
    from profilers.environment import cpu_slug

    result = profile(spec, cpu_slug(), "torch", out, grid=grid, profiler=profiler, progress=False, bandwidth_buffer_mib=8)
    return result.path


@pytest.fixture(scope="module")
def fitted(table):
    return fit_predictor(table, CONFIG, seed=0)


def test_fit_predict_and_eval(fitted):
    predictor = fitted
    candidates = {"gbt", "mlp", "ridge", "additive"}
    assert set(predictor.cv_mape) == candidates and set(predictor.chosen_by_workload.values()) <= candidates
    assert set(predictor.chosen_by_workload) == {"prefill:b1:s16", "decode:b1:c16", "*"}  # one model per workload, and one over all
    assert predictor.chosen_for(PREFILL) == predictor.chosen_by_workload["prefill:b1:s16"]
    assert predictor.chosen_for(Workload("decode", 1, 64)) == predictor.chosen_by_workload["*"]  # no rows of its own
    report = evaluate_predictor(predictor)
    for name in ("prefill:b1:s16", "decode:b1:c16"):
        learned = report["workloads"][name]["learned"]
        assert learned["n"] >= 20
        assert learned["within_10pct"] >= 0.9 and learned["kendall_tau"] >= 0.8
        assert {"lut_sum", "flops_linear"} <= set(report["workloads"][name])


def test_batch_prediction_matches_single_predictions(fitted, table):
    predictor = fitted
    rng = np.random.default_rng(0)
    shapes = [
        Shape(layers=tuple(range(int(rng.integers(1, 7)))), heads=h, kv_heads=h // 2, ffn=int(rng.integers(1, 257)))
        for h in rng.choice([2, 4, 6, 8], size=10_000)
    ]
    batch = predictor.predict(shapes, PREFILL)  # speed: benchmarks/predictor.py
    for i in (0, 3, 9_999):
        assert batch[i] == pytest.approx(predictor.predict([shapes[i]], PREFILL)[0])
    assert np.all(batch > 0)


def test_same_seed_same_predictor(table):
    a, b = fit_predictor(table, CONFIG, seed=4), fit_predictor(table, CONFIG, seed=4)
    shapes = [Shape(layers=(0, 1, 2), heads=4, kv_heads=2, ffn=100), Shape(layers=tuple(range(6)), heads=8, kv_heads=4, ffn=256)]
    assert np.array_equal(a.predict(shapes, DECODE), b.predict(shapes, DECODE))
    assert a.holdout_keys == b.holdout_keys


def test_save_load_round_trip_and_refit_on_version_change(fitted, table, tmp_path):
    predictor = fitted
    path = predictor.save(tmp_path / "p.json")
    shapes = [Shape(layers=(0, 2), heads=8, kv_heads=4, ffn=64)]
    loaded = load_predictor(path)
    assert loaded.refit_reason is None
    assert np.array_equal(loaded.predict(shapes, PREFILL), predictor.predict(shapes, PREFILL))
    saved = json.loads(path.read_text())
    saved["sklearn_version"] = "0.0.1"  # as if written by another scikit-learn
    path.write_text(json.dumps(saved))
    refit = load_predictor(path)
    assert refit.refit_reason and "scikit-learn 0.0.1" in refit.refit_reason
    assert np.allclose(refit.predict(shapes, PREFILL), predictor.predict(shapes, PREFILL))
    path.with_suffix(".joblib").write_bytes(b"garbage")
    assert "missing or changed" in (load_predictor(path).refit_reason or "")
    saved = json.loads(path.read_text())
    saved["recipe"]["table_sha256"] = "0" * 64  # as if the table had been re-measured since
    path.write_text(json.dumps(saved))
    assert "re-measured" in (load_predictor(path).refit_reason or "")
    assert json.loads(path.read_text())["recipe"]["table_sha256"] != "0" * 64  # saved again with the new hash


def test_flag_below_bandwidth_bound(fitted, table):
    predictor = fitted
    shapes = [Shape(layers=tuple(range(6)), heads=8, kv_heads=4, ffn=256)]
    measured = predictor.bandwidth_gb_s
    try:
        predictor.bandwidth_gb_s = 1e6  # a memory so fast that no prediction can beat it
        assert predictor.flags(shapes, DECODE) == [None]
        predictor.bandwidth_gb_s = 1e-6  # an absurdly slow memory: every prediction now beats the bound
        assert "memory-bandwidth bound" in (predictor.flags(shapes, DECODE)[0] or "")
    finally:
        predictor.bandwidth_gb_s = measured


def test_unknown_workload_and_missing_table(fitted, table, tmp_path):
    predictor = fitted
    with pytest.raises(AnyshapeError, match="no block rows for workload prefill:b1:s512"):
        predictor.predict([Shape(layers=(0,), heads=8, kv_heads=4, ffn=8)], Workload("prefill", 1, 512))
    with pytest.raises(AnyshapeError, match="no saved predictor"):
        load_predictor(tmp_path / "none.json")


def test_additive_candidate_recovers_a_linear_latency_per_workload():
    from nas.predictor.model import FEATURES, AdditiveLatency

    rng = np.random.default_rng(0)
    n = 60
    x = np.zeros((n, len(FEATURES)))
    col = {f: FEATURES.index(f) for f in FEATURES}
    depth = rng.integers(1, 12, n).astype(float)
    flops = rng.uniform(1e9, 5e10, n)
    decode = (np.arange(n) % 2).astype(float)
    lut = 0.8 * flops / 1e9  # a lookup-table sum that is 20 % low, plus a per-phase overhead to learn
    latency = np.where(decode == 1, 0.3, 2.0) + flops / 1e9 + 0.05 * depth
    x[:, col["depth"]], x[:, col["decode"]] = depth, decode
    x[:, col["log_lut_ms"]], x[:, col["log_flops"]], x[:, col["log_bytes"]] = np.log(lut), np.log(flops), np.log(1e6)
    model = AdditiveLatency().fit(x, np.log(latency / lut))
    predicted = lut * np.exp(model.predict(x))
    assert np.max(np.abs(predicted / latency - 1)) < 0.01
    assert all((c >= 0).all() for c in model.coef_.values())  # every term adds time
    # each workload (and the all-rows fallback) picked its error weighting by cross-validation, reproducibly
    assert set(model.power_) == set(model.coef_) and set(model.power_.values()) <= set(AdditiveLatency.POWERS)
    again = AdditiveLatency().fit(x, np.log(latency / lut))
    assert again.power_ == model.power_ and all(np.array_equal(again.coef_[k], model.coef_[k]) for k in model.coef_)


def test_a_workload_too_thin_to_fit_alone_uses_the_model_over_all_workloads(table, tmp_path):
    from profilers.tables import load_table, write_table

    full = load_table(table, check_software=False)
    decode_whole = [r for r in full.rows if r["block"] == "whole-model" and r["phase"] == "decode"]
    rows = [r for r in full.rows if r not in decode_whole[4:]]  # 4 decode shapes left: too few for 5 folds
    thin = tmp_path / full.device / full.runtime / "tiny.csv"
    thin.parent.mkdir(parents=True)
    write_table(thin, rows, full.meta)
    predictor = fit_predictor(thin, CONFIG, seed=0, holdout_fraction=0.0)
    assert set(predictor.chosen_by_workload) == {"prefill:b1:s16", "*"}
    assert set(predictor.cv_mape_by_workload["*"]) == set(predictor.cv_mape)
    shapes = [Shape(layers=(0, 1, 2), heads=4, kv_heads=2, ffn=128)]
    own = predictor._model.models[next(iter(predictor._model.models))]
    assert len(predictor._model.models) == 1 and own is not predictor._model.fallback
    decode = predictor.predict(shapes, DECODE)[0]
    measured = {(r["depth"], r["heads"], r["kv_heads"], r["ffn"]): r["latency_ms_p50"] for r in decode_whole}
    assert decode > 0 and np.isfinite(decode)
    # the fallback learned decode from the prefill rows and the 4 decode ones: in range of what was measured
    assert min(measured.values()) * 0.5 < decode < max(measured.values()) * 2


def test_a_table_measured_on_another_cpu_model_is_flagged(table, tmp_path, capsys):
    """One slug (cpu-amd-epyc-2c) has been Zen 3, Zen 4 and Zen 5 VMs: a table from another CPU model says so."""
    import shutil

    from nas.predictor.table import warn_about_table
    from profilers.environment import cpu_mismatch, cpu_slug

    zen5 = {"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2"}
    zen4 = {"cpu_vendor": "AuthenticAMD", "cpu_family": "25", "cpu_model_id": "17"}
    assert cpu_mismatch(zen4, zen5) == "measured on AuthenticAMD family 25 model 17, this machine is AuthenticAMD family 26 model 2"
    assert cpu_mismatch({"cpu_vendor": "AuthenticAMD", "cpu_family": "26", "cpu_model_id": "2"}, zen5) is None
    assert cpu_mismatch({"cpu_model": "AMD EPYC"}, zen5) is None  # an old fingerprint without the ids: unknown, not flagged
    assert cpu_mismatch(zen4, {}) is None  # no /proc/cpuinfo here

    folder = tmp_path / cpu_slug() / "torch"
    shutil.copytree(table.parent, folder)
    csv_path = folder / table.name
    warn_about_table(csv_path, cpu_slug(), csv_path.stem)
    assert "warning" not in capsys.readouterr().err  # measured here
    meta = json.loads((folder / "meta.json").read_text())
    meta["tables"][csv_path.stem]["fingerprint"].update(cpu_vendor="GenuineIntel", cpu_family="6", cpu_model_id="143")
    (folder / "meta.json").write_text(json.dumps(meta))
    warn_about_table(csv_path, cpu_slug(), csv_path.stem)
    err = capsys.readouterr().err
    assert "was measured on GenuineIntel family 6 model 143" in err and "--overwrite" in err and err.count("\n") == 1
    warn_about_table(csv_path, "a5000", csv_path.stem)  # another device's table: not this machine's to judge
    assert capsys.readouterr().err == ""


def _warnings(table, folder, capsys, change) -> str:
    """What ``anyshape predictor`` warns about ``table``, copied once to ``folder`` (a5000/<runtime>), after ``change(entry)`` to its meta.json."""
    import shutil

    from nas.predictor.table import warn_about_table

    if not folder.exists():
        shutil.copytree(table.parent, folder)
    meta = json.loads((folder / "meta.json").read_text())
    change(meta["tables"][table.stem])
    (folder / "meta.json").write_text(json.dumps(meta))
    warn_about_table(folder / table.name, "a5000", table.stem)
    return capsys.readouterr().err


def test_an_onnxruntime_table_measured_on_shared_weights_is_flagged(table, tmp_path, capsys):
    """Before 2026-11-29 every layer of a profiled model held the same weights, which ONNX Runtime shares."""
    folder = tmp_path / "a5000" / "onnxruntime"

    def without_weights(entry):
        entry["runtime_info"] = {k: v for k, v in (entry.get("runtime_info") or {}).items() if k != "weights"}

    err = _warnings(table, folder, capsys, without_weights)
    assert "layers held equal weights" in err and "--runtime onnxruntime" in err and err.count("\n") == 1
    err = _warnings(table, folder, capsys, lambda e: e["runtime_info"].update(weights="seeded random, distinct per parameter"))
    assert err == ""


def test_a_table_measured_on_a_noisy_host_is_flagged(table, tmp_path, capsys):
    folder = tmp_path / "a5000" / "torch"
    noisy = {"speed_spread": 0.41, "noisy_host": True, "note": "noisy host: ..."}
    err = _warnings(table, folder, capsys, lambda e: e.update(load={**e.get("load", {}), **noisy}))
    assert "noisy host" in err and "disagreed by 41%" in err and err.count("\n") == 1
    assert "noisy" not in _warnings(table, folder, capsys, lambda e: e["load"].update(speed_spread=0.08, noisy_host=False))

    def anchored(entry):  # noisy, but every row was timed beside its anchor
        entry["load"].update(speed_spread=0.41, noisy_host=True)
        entry["protocol"]["reference"] = "anchor"
        entry["measurement"] = {"reference": "anchor", "baseline_ms": {"whole-model|prefill|b1|s16|c0|d1|h2|k1|f32|float32": 1.0}}

    assert "noisy" not in _warnings(table, folder, capsys, anchored)
