"""Tables with the fake profiler: writing, resuming after a kill, loading and its errors, listing, estimates, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from nas.families import family_for
from profilers.blocks import ModelSpec
from profilers.environment import cpu_slug
from profilers.fake import FakeProfiler
from profilers.protocol import Measurement, MeasurementModel, ProtocolConfig
from profilers.run import NOISY_HOST_SPREAD, profile
from profilers.tables import COLUMNS, TABLE_FORMAT, TableMeta, list_tables, load_table, row_key, table_meta, write_table
from profilers.testing import TINY_LLAMA
from profilers.workload import GridConfig, build_points, head_grid, sample_shapes

FAST = ProtocolConfig(threads=1, warmup=1, repeats=5, min_repeats=3, max_point_seconds=0.5, min_sample_ms=0.0, rounds=1)
#: FAST, every sample timed beside its workload's anchor (the shared-vm preset's reference)
ANCHORED = dataclasses.replace(FAST, name="fast-anchored", reference="anchor", spinning=False)
GRID = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=2, head_pairs=3, whole_model_samples=2)
SPEC = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
HERE = cpu_slug()
POINTS = build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID)
TOTAL = len(POINTS)


def run_fake(out: Path, **kwargs: object):
    profiler = kwargs.pop("profiler", None) or FakeProfiler(FAST, noise_cv=0.01, seed=0)
    return profile(SPEC, HERE, "fake", out, grid=GRID, profiler=profiler, progress=False,  # type: ignore[arg-type]
                   bandwidth_buffer_mib=16, **kwargs)  # type: ignore[arg-type]


def p50s(table) -> list[float]:  # type: ignore[no-untyped-def]
    return [r["latency_ms_p50"] for r in table.rows]


def test_fake_table_has_every_point_and_the_meta(tmp_path: Path) -> None:
    result = run_fake(tmp_path)
    table = load_table(result.path, device=HERE, runtime="fake")
    assert len(table.rows) == TOTAL == result.rows
    assert tuple(table.to_pandas().columns) == COLUMNS
    meta = table.meta
    assert isinstance(meta, TableMeta) and meta.measured and meta.source == "measured" and meta.device == HERE
    assert meta.runtime == "fake" and meta.model == "tiny-llama" and meta.rows == TOTAL and meta.file == "tiny-llama.csv"
    assert meta.protocol == FAST and meta.grid == GRID.to_dict() and meta.date and meta.composition
    assert meta.fingerprint["logical_cores"] >= 1 and meta.software["torch"] and meta.bandwidth_gb_s > 0
    assert meta.measurement["reference"] == "none" and meta.measurement["baseline_ms"] == {}
    assert meta.measurement_model() == MeasurementModel(FAST)
    assert meta.load["background_cpu_share"] >= 0 and "under_load" in meta.load
    assert meta.passes == {}  # one pass: nothing to compare
    assert table_meta(result.path) == meta  # the meta alone, without the rows
    # the fake's latencies follow its model: a wider MLP costs more
    mlps = sorted(table.select(block="mlp", phase="prefill"), key=lambda r: r["ffn"])
    assert mlps[0]["latency_ms_p50"] < mlps[-1]["latency_ms_p50"]


def test_same_seed_same_table(tmp_path: Path) -> None:
    a = run_fake(tmp_path / "a").path.read_text()
    b = run_fake(tmp_path / "b").path.read_text()
    assert a == b


def test_noisy_points_are_flagged_in_the_table(tmp_path: Path) -> None:
    profiler = FakeProfiler(FAST, noise_cv=0.0, noisy_blocks=("norm",), noisy_cv=0.8, seed=1)
    table = load_table(run_fake(tmp_path, profiler=profiler).path)
    assert all(r["noisy"] for r in table.select(block="norm"))
    assert not any(r["noisy"] for r in table.rows if r["block"] != "norm")
    assert table.meta.noisy_points == len(table.select(block="norm"))


def test_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    killer = FakeProfiler(FAST, seed=0, fail_after=7)
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=killer)
    csv_path = tmp_path / HERE / "fake" / "tiny-llama.csv"
    partial = csv_path.with_name(csv_path.name + ".partial")
    assert not csv_path.exists() and partial.exists()
    assert len(partial.read_text().splitlines()) == 1 + 7  # header + one flushed line per point
    # a torn last line (killed mid-write) is dropped and that point measured again
    with open(partial, "a") as f:
        f.write("mlp,prefill,1,16")
    counter = FakeProfiler(FAST, seed=0)
    result = run_fake(tmp_path, profiler=counter)
    assert result.resumed_points == 7 and result.measured_points == TOTAL - 7
    assert counter.points_started == TOTAL - 7
    assert not partial.exists()
    table = load_table(result.path)
    assert len(table.rows) == TOTAL and len(table.meta.segments) == 2


# --------------------------------------------------------------------------- passes and the speed reference


def _one_slow_pass_each() -> dict[int, float]:
    """Every point 1.6x slow in one of its three whole passes (the first pass of some, the last of others)."""
    return dict.fromkeys([*range(1, TOTAL + 1, 2), *range(2 * TOTAL + 2, 3 * TOTAL + 1, 2)], 1.6)


def test_rounds_keep_the_middle_pass_so_a_burst_of_load_is_dropped(tmp_path: Path) -> None:
    three = dataclasses.replace(FAST, rounds=3)
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(three)).path)
    bursty = FakeProfiler(three, slowdown=_one_slow_pass_each())
    table = load_table(run_fake(tmp_path / "bursty", profiler=bursty).path)
    assert bursty.points_started == 3 * TOTAL
    assert p50s(table) == pytest.approx(p50s(clean))
    # every pass is in the meta: the burst was there, and the middle pass was kept
    values = table.meta.passes["values_by_point"]
    assert set(values) == {row_key(r) for r in table.rows} and all(len(v) == 3 for v in values.values())
    for row in table.rows:
        v = values[row_key(row)]
        assert max(v) == pytest.approx(1.6 * min(v), rel=1e-4) and row["latency_ms_p50"] == pytest.approx(sorted(v)[1], rel=1e-4)
    assert table.meta.passes["rounds"] == 3 and table.meta.passes["slowest_over_fastest_median"] == pytest.approx(0.6, abs=1e-3)
    # one pass alone keeps the bursts
    one = dataclasses.replace(three, rounds=1)
    single = load_table(run_fake(tmp_path / "single", profiler=FakeProfiler(one, slowdown=_one_slow_pass_each())).path)
    assert max(r / c for r, c in zip(p50s(single), p50s(clean))) == pytest.approx(1.6, rel=1e-3)


def test_two_rounds_keep_the_lower_pass(tmp_path: Path) -> None:
    two = dataclasses.replace(FAST, rounds=2)
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(two)).path)
    slow_second = dict.fromkeys(range(TOTAL + 1, 2 * TOTAL + 1), 1.3)  # the whole second pass 1.3x slow
    table = load_table(run_fake(tmp_path / "slow", profiler=FakeProfiler(two, slowdown=slow_second)).path)
    assert p50s(table) == pytest.approx(p50s(clean))


def test_an_anchored_run_keeps_a_slow_machine_out_of_its_rows(tmp_path: Path) -> None:
    """A third of the points measured while the whole machine ran 1.5x slow: raw rows keep it,
    anchored rows (ratio to the anchor, timed beside every sample, times the anchor's median) do not."""
    slow = dict.fromkeys(range(1, TOTAL + 1, 3), 1.5)
    clean_raw = load_table(run_fake(tmp_path / "clean-raw", profiler=FakeProfiler(FAST)).path)
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(ANCHORED)).path)
    raw = load_table(run_fake(tmp_path / "raw", profiler=FakeProfiler(FAST, slowdown=slow)).path)
    table = load_table(run_fake(tmp_path / "anchored", profiler=FakeProfiler(ANCHORED, slowdown=slow)).path)
    assert p50s(table) == pytest.approx(p50s(clean), rel=1e-4) == p50s(clean_raw)  # the anchor's unit is the machine's full speed
    ratios = [r / c for r, c in zip(p50s(raw), p50s(clean_raw))]
    assert max(ratios) == pytest.approx(1.5, rel=1e-3) and sum(1 for x in ratios if x > 1.4) == len(slow)  # raw: slowed
    info = table.meta.measurement
    assert info["reference"] == "anchor" and table.meta.protocol == ANCHORED
    keys = {p.key for p in POINTS}
    assert set(info["anchor_by_point"]) == set(info["anchor_ms_by_point"]) == set(info["ratio_by_point"]) == keys
    # one anchor per workload (GRID: one prefill and one decode workload), a whole-model step of the same phase
    assert sorted(k.split("|")[:2] for k in info["baseline_ms"]) == [["whole-model", "decode"], ["whole-model", "prefill"]]
    assert set(info["anchor_by_point"].values()) == set(info["baseline_ms"])
    assert all(info["anchor_by_point"][p.key].split("|")[1] == p.phase for p in POINTS)
    assert table.meta.anchor_of(POINTS[0].key) == info["anchor_by_point"][POINTS[0].key]
    for row, slowed in zip(table.rows, raw.rows):
        key = row_key(row)
        anchor, anchor_ms, ratio = info["anchor_by_point"][key], info["anchor_ms_by_point"][key], info["ratio_by_point"][key]
        assert row["latency_ms_p50"] == pytest.approx(ratio * info["baseline_ms"][anchor], rel=1e-4)  # the one rule
        # the raw time can be recovered from the meta: row * anchor_ms / baseline (= ratio * anchor_ms)
        raw_p50 = row["latency_ms_p50"] * anchor_ms / info["baseline_ms"][anchor]
        assert raw_p50 == pytest.approx(slowed["latency_ms_p50"], rel=1e-4)
    assert table.meta.measurement_model() == MeasurementModel(ANCHORED, info["baseline_ms"])


def test_an_anchored_tables_model_gives_its_rows_back_from_a_later_measurement(tmp_path: Path) -> None:
    """MeasurementModel.row / at_table_speed of a point measured again (as verify does), on a machine
    now 2x slow, give the table's row: the model is the rule the rows were written with."""
    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(ANCHORED)).path)
    model = table.meta.measurement_model()
    assert model is not None and model.protocol.anchored
    later = FakeProfiler(ANCHORED, slowdown={1: 2.0})  # its first (only) point built runs 2x slow, its anchor too
    for point in (p for p in POINTS if p.block == "whole-model"):
        later.points_started = 0
        later._anchors = {}
        m = later.measure_rounds(SPEC, point)
        row = next(r for r in table.rows if row_key(r) == point.key)
        assert m.latency_ms_p50 == pytest.approx(2 * row["latency_ms_p50"], rel=1e-4)  # raw: the slow machine
        anchor = table.meta.anchor_of(point.key)
        kept = model.row(m, anchor)
        assert model.at_table_speed(m, anchor) == kept.latency_ms_p50 == pytest.approx(row["latency_ms_p50"], rel=1e-4)
        assert kept.latency_ms_p10 == pytest.approx(row["latency_ms_p10"], rel=1e-4)
        assert kept.latency_ms_p90 == pytest.approx(row["latency_ms_p90"], rel=1e-4)
    # a raw table's model: the measurement as it is
    raw = load_table(run_fake(tmp_path / "raw", profiler=FakeProfiler(FAST)).path)
    raw_model = raw.meta.measurement_model()
    point = POINTS[0]
    m = FakeProfiler(FAST).measure(SPEC, point)
    assert raw_model is not None and raw_model.row(m) == m
    assert raw_model.at_table_speed(m) == pytest.approx(raw.rows[0]["latency_ms_p50"], rel=1e-4)


def test_verify_uses_the_model_of_the_predictions_table(tmp_path: Path) -> None:
    from nas.verify import live_model, table_model, whole_model_point
    from nas.workload import Workload
    from profilers.protocol import live_protocol, load_protocol
    from profilers.workload import anchor_point

    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(ANCHORED)).path)
    model = table_model(table.label, tmp_path)
    assert model == table.meta.measurement_model() and model.protocol == ANCHORED  # measured as the table was
    space = SPEC.family.space(SPEC.config)
    for phase in ("prefill", "decode"):  # the anchor verify times a shape beside is the one the table used
        anchor = anchor_point(space, whole_model_point(space.full_shape(), Workload(phase=phase, seq_len=16))).key
        assert anchor in model.baselines
        m = Measurement(11.0, 12.0, 13.0, 5, 0.01, False, 1, 1, anchor_ms=4.0, anchor_ratio=3.0)
        assert model.at_table_speed(m, anchor) == pytest.approx(3.0 * model.baselines[anchor])
    quiet = MeasurementModel(load_protocol("quiet"))
    assert table_model(table.label, tmp_path / "elsewhere") == quiet  # no table there: raw time
    assert table_model(None, tmp_path) == quiet
    assert live_model() == MeasurementModel(live_protocol())


def test_a_host_whose_speed_wanders_is_called_noisy_in_the_meta(tmp_path: Path) -> None:
    """No other process, yet the machine's speed wandered by 50-60 %: meta.json and the result say noisy host,
    for raw rows (their passes disagree) and anchored rows (their anchors spread) alike."""
    three = dataclasses.replace(FAST, rounds=3)
    quiet = run_fake(tmp_path / "quiet", profiler=FakeProfiler(three))
    load = load_table(quiet.path).meta.load
    assert quiet.noisy_host is False and load["noisy_host"] is False and load["speed_spread"] == pytest.approx(0.0)
    assert load["note"] == "quiet machine" or load["under_load"]  # (other processes' load comes first in the note)
    noisy = run_fake(tmp_path / "noisy", profiler=FakeProfiler(three, slowdown=_one_slow_pass_each()))
    meta = load_table(noisy.path).meta
    assert noisy.noisy_host is True and meta.noisy_host and meta.load["speed_spread"] == pytest.approx(0.6, abs=1e-3)
    assert meta.load["under_load"] or (meta.load["note"].startswith("noisy host") and "--protocol shared-vm" in meta.load["note"])
    # anchored: the anchors' own spread over the run
    steady = run_fake(tmp_path / "steady", profiler=FakeProfiler(ANCHORED))
    assert steady.noisy_host is False and load_table(steady.path).meta.load["speed_spread"] == pytest.approx(0.0)
    wandering = dict.fromkeys(range(1, TOTAL + 1, 3), 1.5)
    anchored = run_fake(tmp_path / "anchored", profiler=FakeProfiler(ANCHORED, slowdown=wandering))
    meta = load_table(anchored.path).meta
    assert anchored.noisy_host is True and meta.load["speed_spread"] == pytest.approx(0.5, rel=1e-3)
    assert meta.load["under_load"] or "every row was timed beside its anchor" in meta.load["note"]
    # one raw pass: nothing to tell the host's speed by
    single = run_fake(tmp_path / "single", profiler=FakeProfiler(FAST, slowdown=wandering))
    assert single.noisy_host is None and "noisy_host" not in load_table(single.path).meta.load


def test_the_load_note_says_what_to_do() -> None:
    from profilers.run import load_entry, speed_spread

    raw, anchored = FAST, ANCHORED

    def passes(spread: float) -> dict[str, float]:
        return {"slowest_over_fastest_median": spread}

    def anchors(*values_by_anchor: list[float]) -> dict[str, dict[str, object]]:
        measurement: dict[str, dict[str, object]] = {"anchor_by_point": {}, "anchor_ms_by_point": {}}
        for a, values in enumerate(values_by_anchor):
            for i, v in enumerate(values):
                measurement["anchor_by_point"][f"p{a}-{i}"] = f"anchor{a}"
                measurement["anchor_ms_by_point"][f"p{a}-{i}"] = v
        return measurement

    assert load_entry(0.01, False, raw, {}, passes(0.05)) == {"background_cpu_share": 0.01, "under_load": False,
                                                             "speed_spread": 0.05, "noisy_host": False, "note": "quiet machine"}
    assert load_entry(0.01, False, raw, {}, passes(NOISY_HOST_SPREAD))["noisy_host"] is False  # above 25 %, not at it
    note = load_entry(0.01, False, raw, {}, passes(0.3))
    assert note["noisy_host"] is True and note["note"].startswith("noisy host") and "disagreed by 30%" in note["note"]
    assert "--protocol shared-vm" in note["note"]
    # anchored: the widest p10-p90 of an anchor over its median; its rows divide it out, so nothing to switch on
    wandered = anchors([1.0] * 6 + [1.4] * 5, [2.0] * 11)
    assert speed_spread(anchored, wandered, {}) == pytest.approx(0.4)
    note = load_entry(0.01, False, anchored, wandered, {})
    assert note["noisy_host"] is True and "spanned 40%" in note["note"] and "every row was timed beside its anchor" in note["note"]
    assert "--protocol" not in note["note"]
    steady = anchors([1.0, 1.1, 1.05, 0.95], [2.0])  # an anchor of one point tells nothing
    assert speed_spread(anchored, steady, {}) == pytest.approx((1.085 - 0.965) / 1.025)
    assert load_entry(0.01, False, anchored, steady, {})["noisy_host"] is False
    assert speed_spread(anchored, anchors([2.0]), {}) is None
    # the raw rule reads the passes only, the anchored one the anchors only
    assert speed_spread(raw, wandered, {}) is None and speed_spread(anchored, {}, passes(0.9)) is None
    busy = load_entry(0.2, True, raw, {}, passes(0.5))
    assert busy["note"].startswith("measured while other processes") and busy["noisy_host"]  # our own load comes first
    assert load_entry(0.01, False, raw, {}, {}) == {"background_cpu_share": 0.01, "under_load": False, "note": "quiet machine"}


def test_an_anchored_run_killed_midway_resumes_to_the_same_table(tmp_path: Path) -> None:
    two = dataclasses.replace(ANCHORED, rounds=2)
    whole = load_table(run_fake(tmp_path / "whole", profiler=FakeProfiler(two)).path)
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path / "killed", profiler=FakeProfiler(two, fail_after=TOTAL + 3))  # in the second pass
    resumed = load_table(run_fake(tmp_path / "killed", profiler=FakeProfiler(two)).path)
    assert p50s(resumed) == pytest.approx(p50s(whole), rel=1e-6)
    assert resumed.meta.measurement["ratio_by_point"] == pytest.approx(whole.meta.measurement["ratio_by_point"])
    assert resumed.meta.measurement["baseline_ms"] == pytest.approx(whole.meta.measurement["baseline_ms"])
    assert len(resumed.meta.segments) == 2


def test_an_anchored_row_whose_anchor_was_lost_is_measured_again(tmp_path: Path) -> None:
    """A kill between a row's line and the state that holds its anchor: the row cannot become ratio * baseline."""
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(ANCHORED, fail_after=6))
    state_path = tmp_path / HERE / "fake" / ".tiny-llama.run.json"
    state = json.loads(state_path.read_text())
    lost = sorted(state["anchor"])[:2]
    for key in lost:
        del state["anchor"][key]
    state_path.write_text(json.dumps(state))
    counter = FakeProfiler(ANCHORED)
    result = run_fake(tmp_path, profiler=counter)
    assert result.resumed_points == 4 and counter.points_started == TOTAL - 4
    assert set(load_table(result.path).meta.measurement["ratio_by_point"]) == {p.key for p in POINTS}


def test_a_run_killed_between_passes_resumes_without_measuring_a_pass_twice(tmp_path: Path) -> None:
    three = dataclasses.replace(FAST, rounds=3)
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(three, fail_after=TOTAL + 10))  # killed in the second pass
    counter = FakeProfiler(three)
    result = run_fake(tmp_path, profiler=counter)
    # at most the passes since the last state save (every 5th) are measured again
    assert 2 * TOTAL - 10 <= counter.points_started <= 2 * TOTAL - 10 + 5
    table = load_table(result.path)
    assert result.rows == TOTAL and table.meta.protocol is not None and table.meta.protocol.rounds == 3
    assert all(len(v) == 3 for v in table.meta.passes["values_by_point"].values())


def _staggered_with_fast_moments(tmp_path: Path) -> Path:
    """A staggered 3-pass fake table where every fourth pass ran 30 % fast (a moment of an idle neighbour)."""
    fast = dict.fromkeys(range(2, 3 * TOTAL + 1, 4), 0.7)
    staggered = dataclasses.replace(FAST, rounds=3, stagger=True)
    return run_fake(tmp_path, profiler=FakeProfiler(staggered, noise_cv=0.01, seed=0, slowdown=fast)).path


def test_a_staggered_run_keeps_each_points_middle_pass(tmp_path: Path) -> None:
    table = load_table(_staggered_with_fast_moments(tmp_path))
    passes = table.meta.passes["values_by_point"]
    assert table.meta.passes["kept"].startswith("the middle pass")
    judged = {row_key(r): r["latency_ms_p50"] for r in table.rows}  # raw rows: judged by their p50
    assert judged == pytest.approx({k: sorted(v)[1] for k, v in passes.items()}, rel=1e-4)
    outliers = [k for k, v in passes.items() if min(v) < 0.85 * sorted(v)[1]]
    assert outliers and all(judged[k] > 1.1 * min(passes[k]) for k in outliers)  # the fast moment was not kept


def test_run_killed_before_its_first_point_resumes(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(FAST, fail_after=0))
    result = run_fake(tmp_path)
    assert result.resumed_points == 0 and result.rows == result.measured_points
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["meta.json", "tiny-llama.csv"]


@pytest.mark.parametrize("other", [dataclasses.replace(FAST, warmup=2), ANCHORED])
def test_resume_with_other_settings_is_refused_until_restart(tmp_path: Path, other: ProtocolConfig) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(FAST, fail_after=3))
    with pytest.raises(AnyshapeError, match="protocol differ"):
        run_fake(tmp_path, profiler=FakeProfiler(other))
    result = run_fake(tmp_path, profiler=FakeProfiler(other), restart=True)
    assert result.resumed_points == 0


def test_existing_table_needs_overwrite(tmp_path: Path) -> None:
    run_fake(tmp_path)
    with pytest.raises(AnyshapeError, match="--overwrite"):
        run_fake(tmp_path)
    assert run_fake(tmp_path, overwrite=True).rows > 0


# --------------------------------------------------------------------------- meta.json


def test_table_meta_round_trips(tmp_path: Path) -> None:
    for name, protocol in (("raw", FAST), ("anchored", dataclasses.replace(ANCHORED, rounds=2))):
        path = run_fake(tmp_path / name, profiler=FakeProfiler(protocol)).path
        meta = load_table(path).meta
        data = meta.to_dict()
        assert data["format"] == TABLE_FORMAT and data["protocol"] == protocol.to_dict()
        assert TableMeta.from_dict(data, "here") == meta
        assert TableMeta.from_dict(json.loads(json.dumps(data)), "here") == meta  # through JSON too
        entry = json.loads((path.parent / "meta.json").read_text())["tables"]["tiny-llama"]
        assert TableMeta.from_dict(entry, "here") == meta == table_meta(path)  # what is on disk is what load_table gives
        assert "format" not in dataclasses.asdict(meta)
    estimate_meta = TableMeta(source="roofline-estimate", device="a5000", runtime="torch", model="m", family="llama",
                              kind="decoder", config_sha256="0" * 64, shape_space={"num_layers": 2}, date="today",
                              software={"torch": "2.5.1"}, grid=GRID.to_dict(), composition="c", note="ESTIMATE")
    assert TableMeta.from_dict(estimate_meta.to_dict(), "here") == estimate_meta and estimate_meta.measurement_model() is None


def _entry(path: Path) -> dict[str, object]:
    return json.loads((path.parent / "meta.json").read_text())["tables"]["tiny-llama"]


def test_a_meta_with_an_unknown_or_missing_field_is_refused(table_path: Path) -> None:
    entry = _entry(table_path)
    with pytest.raises(AnyshapeError, match=r"here: unknown meta field\(s\) \['reference'\]"):
        TableMeta.from_dict({**entry, "reference": {"baseline_ms": 1.0}}, "here")  # v1's probe record
    missing = {k: v for k, v in entry.items() if k != "config_sha256"}
    with pytest.raises(AnyshapeError, match=r"here: meta misses \['config_sha256'\]"):
        TableMeta.from_dict(missing, "here")
    with pytest.raises(AnyshapeError, match=r"protocol has unknown field\(s\) \['anchor'\]"):
        TableMeta.from_dict({**entry, "protocol": {**entry["protocol"], "anchor": True}}, "here")  # type: ignore[dict-item]
    with pytest.raises(AnyshapeError, match="a measured table's meta needs its protocol"):
        TableMeta.from_dict({k: v for k, v in entry.items() if k != "protocol"}, "here")
    with pytest.raises(AnyshapeError, match=r"measurement.reference is 'anchor' but protocol custom uses 'none'"):
        TableMeta.from_dict({**entry, "measurement": {"reference": "anchor", "baseline_ms": {"a": 1.0}}}, "here")
    with pytest.raises(AnyshapeError, match="table source is 'guessed'"):
        TableMeta.from_dict({**entry, "source": "guessed"}, "here")
    with pytest.raises(AnyshapeError, match="format is 'anyshape/latency-table-v9'"):
        TableMeta.from_dict({**entry, "format": "anyshape/latency-table-v9"}, "here")
    # and load_table says so, in one line naming the file and the table
    meta_path = table_path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tables"]["tiny-llama"]["reference"] = {"baseline_ms": 1.0}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AnyshapeError, match=r"meta.json table 'tiny-llama': unknown meta field") as e:
        load_table(table_path)
    assert "\n" not in str(e.value)


def test_a_v1_table_is_refused_with_what_to_do(table_path: Path) -> None:
    v1 = {**_entry(table_path), "format": "anyshape/latency-table-v1"}
    with pytest.raises(AnyshapeError, match="measure it again with anyshape profile --protocol") as e:
        TableMeta.from_dict(v1, "here")
    assert "\n" not in str(e.value)
    meta_path = table_path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tables"]["tiny-llama"]["format"] = "anyshape/latency-table-v1"  # a v1 entry in a v2 folder
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AnyshapeError, match=r"latency-table-v1, .*measure it again"):
        load_table(table_path)
    with pytest.raises(AnyshapeError, match=r"latency-table-v1, .*measure it again"):
        table_meta(table_path)
    meta["format"] = "anyshape/latency-table-v1"  # a whole v1 folder, as an older anyshape wrote it
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AnyshapeError, match=r"latency-table-v1, .*measure its tables again .*--overwrite") as e:
        load_table(table_path)
    assert "\n" not in str(e.value)


def test_an_unreadable_meta_is_refused_not_replaced(table_path: Path) -> None:
    """meta.json describes every table of its folder: a write that cannot read it must not drop the others."""
    meta_path = table_path.parent / "meta.json"
    table = load_table(table_path)
    meta_path.write_text("{not json")
    other = table_path.with_name("other.csv")
    with pytest.raises(AnyshapeError, match="is not valid JSON"):
        write_table(other, table.rows, table.meta)
    assert meta_path.read_text() == "{not json" and not other.exists()  # neither file written
    # a run refuses at its start, before measuring anything
    counter = FakeProfiler(FAST)
    with pytest.raises(AnyshapeError, match="is not valid JSON"):
        profile(SPEC, HERE, "fake", table_path.parent.parent.parent, grid=GRID, profiler=counter, name="other",
                progress=False, bandwidth_buffer_mib=16)
    assert counter.points_started == 0 and not other.exists()


def test_a_second_table_joins_the_folders_meta(table_path: Path) -> None:
    table = load_table(table_path)
    other = table_path.with_name("another.csv")
    write_table(other, table.rows[:3], dataclasses.replace(table.meta, model="another"))
    meta = json.loads((table_path.parent / "meta.json").read_text())
    assert list(meta["tables"]) == ["another", "tiny-llama"]  # sorted, the first one kept
    assert load_table(table_path).meta == table.meta
    again = load_table(other)
    assert again.meta.rows == 3 and again.meta.file == "another.csv" and again.meta.model == "another"
    assert sorted(p.name for p in table_path.parent.iterdir()) == ["another.csv", "meta.json", "tiny-llama.csv"]  # no temp files


# --------------------------------------------------------------------------- bad tables


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    return run_fake(tmp_path).path


def test_corrupted_csv_is_a_one_line_error(table_path: Path) -> None:
    lines = table_path.read_text().splitlines()
    table_path.write_text("\n".join([lines[0], lines[1].replace("prefill,1,", "prefill,one,", 1), *lines[2:]]) + "\n")
    with pytest.raises(AnyshapeError, match=r"line 2: column batch has 'one'") as e:
        load_table(table_path)
    assert "\n" not in str(e.value)


def test_truncated_csv_is_detected(table_path: Path) -> None:
    lines = table_path.read_text().splitlines()
    table_path.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(AnyshapeError, match="truncated or edited"):
        load_table(table_path)


def test_wrong_columns_are_named(table_path: Path) -> None:
    text = table_path.read_text().replace("latency_ms_p50", "latency_p50", 1)
    table_path.write_text(text)
    with pytest.raises(AnyshapeError, match=r"wrong columns \(missing \['latency_ms_p50'\]; unexpected \['latency_p50'\]\)"):
        load_table(table_path)


def test_table_of_another_device_is_refused(table_path: Path) -> None:
    with pytest.raises(AnyshapeError, match=f"is for device '{HERE}', not 'a5000'"):
        load_table(table_path, device="a5000")
    moved = table_path.parent.parent.parent / "cpu-xeon-8480-2c" / "fake"
    moved.mkdir(parents=True)
    for f in table_path.parent.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    with pytest.raises(AnyshapeError, match=r"meta.json says device"):
        load_table(moved / table_path.name)


def test_table_of_another_software_version_is_refused(tmp_path: Path) -> None:
    from profilers.torch_profiler import TorchProfiler

    class FakeTorch(FakeProfiler):
        runtime = "torch"  # a fake measurement filed as a torch table

    result = run_fake(tmp_path, profiler=FakeTorch(FAST))
    load_table(result.path)  # same versions: fine
    meta_path = result.path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tables"]["tiny-llama"]["software"]["torch"] = "1.13.1"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AnyshapeError, match=r"measured with torch 1.13.1, this environment has"):
        load_table(result.path)
    assert load_table(result.path, check_software=False).rows
    assert TorchProfiler.runtime == "torch"


def test_missing_or_broken_meta_is_an_error(table_path: Path) -> None:
    meta = table_path.parent / "meta.json"
    meta.write_text("{not json")
    with pytest.raises(AnyshapeError, match=r"meta.json is not valid JSON"):
        load_table(table_path)
    meta.unlink()
    with pytest.raises(AnyshapeError, match=r"meta.json is missing"):
        load_table(table_path)


def test_no_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AnyshapeError, match="no latency table"):
        load_table(tmp_path / "x" / "torch" / "y.csv")


def test_list_tables_reports_each_table(tmp_path: Path) -> None:
    run_fake(tmp_path)
    (tmp_path / "broken" / "torch").mkdir(parents=True)
    (tmp_path / "broken" / "torch" / "t.csv").write_text("garbage\n")
    listed = {t["device"]: t for t in list_tables(tmp_path)}
    assert listed[HERE]["source"] == "measured" and listed[HERE]["status"] == "ok" and listed[HERE]["rows"] > 0
    assert listed[HERE]["protocol"] == FAST.name and listed[HERE]["noisy_host"] is None
    assert listed["broken"]["status"].startswith(str(tmp_path / "broken")) or "meta.json" in listed["broken"]["status"]


# --------------------------------------------------------------------------- estimates


def test_estimates_are_marked_and_slower_on_smaller_devices(tmp_path: Path) -> None:
    from profilers.roofline import estimate

    tables = {}
    for device in ("h100", "a5000", "jetson-orin-nano-8gb"):
        result = estimate(SPEC, device, "torch", tmp_path, grid=GRID)
        assert result.source == "roofline-estimate"
        tables[device] = load_table(result.path)
    for table in tables.values():
        assert table.source == "roofline-estimate" and "ESTIMATE" in table.meta.note
        assert table.meta.protocol is None and table.meta.measurement_model() is None and not table.meta.measured
        assert all(r["repeats"] == 0 for r in table.rows)
        assert "(roofline-estimate)" in table.label
    def whole(device: str) -> float:
        return tables[device].select(block="whole-model", phase="decode")[0]["latency_ms_p50"]
    assert whole("h100") < whole("a5000") < whole("jetson-orin-nano-8gb")


def test_decode_estimate_is_bandwidth_bound() -> None:
    from profilers.cost import ModelDims, block_cost
    from profilers.devices import A5000
    from profilers.roofline import Efficiency, roofline_ms
    from profilers.run import resolve_model_spec
    from profilers.workload import BlockPoint

    spec = resolve_model_spec("qwen2.5-0.5b")
    dims = ModelDims.from_config(spec.family, spec.config)
    point = BlockPoint("whole-model", "decode", 1, 1, 128, 24, 14, 2, 4864, "float16")
    eff = Efficiency(1.0, 1.0, 0.0, "ideal")
    ms = roofline_ms(dims, point, A5000.memory_bandwidth_gb_s, A5000.fp16_dense_tflops * 1e3, eff)
    weights = block_cost(dims, point).weight_bytes
    assert 0.9e9 < weights < 1.0e9  # 494M params minus the embedding table, fp16
    assert ms == pytest.approx(block_cost(dims, point).bytes / 768e6, rel=1e-9)


# --------------------------------------------------------------------------- grids


def test_grid_round_trips_and_validates() -> None:
    grid = GridConfig(batch=(1, 4), seq_len=(64,), ffn_steps=3, seed=5)
    assert GridConfig.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    with pytest.raises(AnyshapeError, match=r"grid.phases"):
        GridConfig(phases=("train",))
    with pytest.raises(AnyshapeError, match="unknown field"):
        GridConfig.from_dict({"seqlen": [1]})
    with pytest.raises(AnyshapeError, match=r"grid.batch"):
        GridConfig(batch=(0,))


def test_whole_model_shapes_are_seeded() -> None:
    space = SPEC.family.space(SPEC.config)
    a = sample_shapes(space, GridConfig(whole_model_samples=4, seed=3))
    b = sample_shapes(space, GridConfig(whole_model_samples=4, seed=3))
    c = sample_shapes(space, GridConfig(whole_model_samples=4, seed=4))
    assert a == b and a != c and a[0] == space.full_shape()
    assert len({(s.depth, s.heads, s.kv_heads, s.ffn) for s in a}) == 4


def test_whole_model_shapes_can_sit_between_the_measured_widths(caplog: pytest.LogCaptureFixture) -> None:
    space = SPEC.family.space(SPEC.config)
    measured = set(space.ffn_choices(2))
    fine = sample_shapes(space, GridConfig(ffn_steps=2, whole_model_ffn_steps=16, whole_model_samples=30))
    assert len(fine) == 30 and {s.ffn for s in fine} - measured  # widths the blocks never measured
    # a space with fewer distinct shapes than asked gives all of them, and says so
    available = space.num_layers * len(space.head_choices()) * 2
    with caplog.at_level("WARNING"):
        every = sample_shapes(space, GridConfig(ffn_steps=2, whole_model_samples=available + 5))
    assert len(every) == available and "holds only" in caplog.text
    with pytest.raises(AnyshapeError, match="whole_model_ffn_steps"):
        GridConfig(whole_model_ffn_steps=-1)


def test_head_grid_spreads_and_keeps_the_ends() -> None:
    from profilers.run import resolve_model_spec

    spec = resolve_model_spec("qwen2.5-0.5b")
    space = spec.family.space(spec.config)
    pairs = head_grid(space, 4)
    assert len(pairs) == 4 and pairs[0] == space.head_choices()[0] and pairs[-1] == (14, 2)
    assert head_grid(space, 0) == space.head_choices()


def test_encoders_have_prefill_only_and_full_heads(minilm_dir: Path) -> None:
    from profilers.run import resolve_model_spec

    spec = resolve_model_spec("minilm")
    points = build_points(spec.family, spec.family.space(spec.config), GridConfig())
    assert {p.phase for p in points} == {"prefill"}
    assert {p.heads for p in points if p.block == "attention"} == {12}


# --------------------------------------------------------------------------- CLI


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in-process (its entry point returns the exit status) and capture its output."""
    from nas.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


@pytest.mark.slow  # a fresh interpreter imports torch: ~10 s on a loaded 2-core machine
def test_cli_entry_point_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli", "profile", "--device", "tpu-v9", "--model", "x", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("anyshape: error: unknown device 'tpu-v9'") and done.stderr.count("\n") == 1


#: protocol files the CLI cases below name as {file}
PROTOCOL_FILES = {
    "negative-sample": "min_sample_ms: -1\n",
    "spinning-anchor": "extends: shared-vm\nspinning: true\n",
    "old-switch": "extends: quiet\nanchor: true\n",
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu-v9", "--model", "ref-decoder"], "unknown device 'tpu-v9'; known:"),
        (["--device", "cpu-xeon-8480-2c", "--model", "ref-decoder"], "is not this machine's CPU"),
        (["--device", "a5000", "--model", "ref-decoder"], "CUDA was asked for but torch sees no CUDA device"),
        (["--device", "a5000", "--model", "ref-decoder", "--runtime", "onnxruntime"], "CUDA was asked for but this onnxruntime"),
        (["--device", HERE, "--model", "ref-decoder", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        (["--device", HERE, "--model", "no/such-model-here", "--grid", "{bad"], "--grid is not valid JSON"),
        (["--device", HERE, "--model", "ref-decoder", "--threads", "0"], "protocol.threads is 0"),
        (["--device", HERE, "--model", "ref-decoder", "--threads", "100000"], "allowed range 1.."),
        (["--device", HERE, "--model", "ref-decoder", "--protocol", "loud"], "--protocol loud: no such preset or file; presets:"),
        (["--device", HERE, "--model", "ref-decoder", "--protocol", "{negative-sample}"], "protocol.min_sample_ms is -1; it must be >= 0"),
        (["--device", HERE, "--model", "ref-decoder", "--protocol", "{old-switch}"], "unknown field(s) ['anchor']"),
        (["--device", HERE, "--model", "ref-decoder", "--runtime", "onnxruntime", "--protocol", "{spinning-anchor}"],
         "set spinning: false"),
        (["--device", "gpu", "--model", "ref-decoder", "--estimate"], "unknown device 'gpu'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    import torch

    if "CUDA" in message and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name, text in PROTOCOL_FILES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    files = {f"{{{n}}}": str(tmp_path / f"{n}.yaml") for n in PROTOCOL_FILES}
    args = [files.get(a, a) for a in args]
    done = cli(capsys, "profile", *args, "--out", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_cli_protocol_options_reach_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import profilers.run
    from profilers.protocol import load_protocol

    seen = {}

    def fake_profile(model, device, runtime, out, *, protocol, **kwargs):  # type: ignore[no-untyped-def]
        seen["protocol"], seen["progress"] = protocol, kwargs.get("progress")
        raise AnyshapeError("stop here")

    monkeypatch.setattr(profilers.run, "profile", fake_profile)
    base = ["profile", "--device", HERE, "--model", "ref-decoder", "--runtime", "onnxruntime", "--out", str(tmp_path)]
    done = cli(capsys, *base, "--protocol", "shared-vm", "--threads", "1", "--no-progress")
    assert done.returncode == 1 and "stop here" in done.stderr
    assert seen["protocol"] == load_protocol("shared-vm", threads=1) and seen["progress"] is False
    done = cli(capsys, *base)  # the default: quiet, every CPU this process may use
    assert seen["protocol"] == load_protocol("quiet") and seen["protocol"].name == "quiet" and seen["progress"] is True
    mine = tmp_path / "slow-vm.yaml"
    mine.write_text("extends: shared-vm\nmin_sample_ms: 20\nrounds: 15\n")
    done = cli(capsys, *base, "--protocol", str(mine))
    protocol = seen["protocol"]
    assert (protocol.min_sample_ms, protocol.rounds, protocol.spinning, protocol.reference) == (20.0, 15, False, "anchor")
    assert protocol.name == "slow-vm.yaml"
    assert protocol.to_dict()["min_sample_ms"] == 20.0  # part of the run's identity: a resume with another value refuses


def test_cli_estimate_and_tables_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = cli(capsys, "profile", "--device", "jetson-orin-nano-8gb", "--model", "ref-decoder", "--estimate", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "(roofline-estimate)" in done.stdout
    listed = cli(capsys, "tables", "list", "--root", str(tmp_path), "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["device"] == "jetson-orin-nano-8gb" and entry["source"] == "roofline-estimate"
    assert entry["rows"] > 0 and entry["date"] and entry["status"] == "ok" and entry["protocol"] is None
    shown = cli(capsys, "tables", "list", "--root", str(tmp_path))
    assert "roofline-estimate" in shown.stdout


def test_cli_corrupted_table_in_list_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "profile", "--device", "a5000", "--model", "ref-decoder", "--estimate", "--out", str(tmp_path))
    csv_path = tmp_path / "a5000" / "torch" / "ref-decoder.csv"
    csv_path.write_text(csv_path.read_text()[:200])
    listed = cli(capsys, "tables", "list", "--root", str(tmp_path), "--json")
    (entry,) = json.loads(listed.stdout)
    assert entry["status"] != "ok" and ("truncated" in entry["status"] or "fields" in entry["status"])


def test_calibration_recovers_the_efficiency_of_a_known_device(tmp_path: Path) -> None:
    from profilers.cost import ModelDims
    from profilers.roofline import calibrate

    # the fake runs at 50 GFLOP/s and 20 GB/s; against roofs of 100 and 40 that is 50 % of each
    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(FAST, gflops=50, bandwidth_gb_s=20, overhead_ms=0.0)).path)
    eff = calibrate(table, ModelDims.from_config(SPEC.family, SPEC.config), bandwidth_gb_s=40, gflops=100)
    assert eff.memory == pytest.approx(0.5, rel=0.15)
    assert eff.compute == pytest.approx(0.5, rel=0.15)
    assert "calibrated on" in eff.source


def test_gpu_estimates_calibrate_on_a_measured_gpu_table(tmp_path: Path) -> None:
    from profilers.roofline import GPU_PRIOR, estimate

    prior = load_table(estimate(SPEC, "a5000", "torch", tmp_path / "prior", grid=GRID).path)
    assert prior.meta.roofline["efficiency"]["source"] == GPU_PRIOR.source
    # pretend an H100 was measured (rows from the fake, filed as a measured h100 torch table)
    fake = load_table(run_fake(tmp_path / "fake", profiler=FakeProfiler(FAST, gflops=2e5, bandwidth_gb_s=1000)).path)
    write_table(tmp_path / "cal" / "h100" / "torch" / "tiny-llama.csv", fake.rows,
                dataclasses.replace(fake.meta, device="h100", runtime="torch"))
    calibrated = load_table(estimate(SPEC, "a5000", "torch", tmp_path / "cal", grid=GRID).path)
    assert calibrated.meta.roofline["efficiency"]["source"].startswith("calibrated on h100/torch/tiny-llama")
    assert calibrated.source == "roofline-estimate"
