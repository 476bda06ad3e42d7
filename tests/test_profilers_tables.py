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
from profilers.protocol import ProtocolConfig
from profilers.run import profile
from profilers.tables import COLUMNS, list_tables, load_table, row_key
from profilers.testing import TINY_LLAMA
from profilers.workload import GridConfig, build_points, head_grid, sample_shapes

FAST = ProtocolConfig(threads=1, warmup=1, repeats=5, min_repeats=3, max_point_seconds=0.5, min_sample_ms=0.0, rounds=1)
GRID = GridConfig(seq_len=(16,), context_len=(16,), ffn_steps=2, head_pairs=3, whole_model_samples=2)
SPEC = ModelSpec("tiny-llama", family_for(TINY_LLAMA), TINY_LLAMA)
HERE = cpu_slug()


def run_fake(out: Path, **kwargs: object):
    profiler = kwargs.pop("profiler", None) or FakeProfiler(FAST, noise_cv=0.01, seed=0)
    return profile(SPEC, HERE, "fake", out, grid=GRID, profiler=profiler, progress=False,  # type: ignore[arg-type]
                   bandwidth_buffer_mib=16, **kwargs)  # type: ignore[arg-type]


def test_fake_table_has_every_point_and_the_meta(tmp_path: Path) -> None:
    result = run_fake(tmp_path)
    table = load_table(result.path, device=HERE, runtime="fake")
    points = build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID)
    assert len(table.rows) == len(points) == result.rows
    assert tuple(table.to_pandas().columns) == COLUMNS
    meta = table.meta
    assert meta["source"] == "measured" and meta["device"] == HERE
    for key in ("fingerprint", "software", "protocol", "grid", "date", "memory_bandwidth", "load", "composition"):
        assert key in meta, key
    assert meta["fingerprint"]["logical_cores"] >= 1 and meta["software"]["torch"]
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
    assert table.meta["noisy_points"] == len(table.select(block="norm"))


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
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    assert result.resumed_points == 7 and result.measured_points == total - 7
    assert counter.points_started == total - 7
    assert not partial.exists()
    table = load_table(result.path)
    assert len(table.rows) == total and len(table.meta["segments"]) == 2


def test_rounds_keep_the_fastest_pass_so_a_burst_of_load_is_dropped(tmp_path: Path) -> None:
    three = dataclasses.replace(FAST, rounds=3, reference=False)
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(three)).path)
    # every point is 1.6x slow in one of its three passes (the first pass of some, the last of others)
    bursts = dict.fromkeys([*range(1, total + 1, 2), *range(2 * total + 2, 3 * total + 1, 2)], 1.6)
    bursty = FakeProfiler(three, slowdown=bursts)
    table = load_table(run_fake(tmp_path / "bursty", profiler=bursty).path)
    assert bursty.points_started == 3 * total
    assert [r["latency_ms_p50"] for r in table.rows] == pytest.approx([r["latency_ms_p50"] for r in clean.rows])
    # one pass alone keeps the bursts
    one = dataclasses.replace(three, rounds=1)
    single = load_table(run_fake(tmp_path / "single", profiler=FakeProfiler(one, slowdown=bursts)).path)
    assert max(r["latency_ms_p50"] / c["latency_ms_p50"] for r, c in zip(single.rows, clean.rows)) == pytest.approx(1.6, rel=1e-3)


def test_the_reference_probe_scales_slow_moments_of_the_machine_away(tmp_path: Path) -> None:
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(FAST)).path)
    slow = dict.fromkeys(range(1, total + 1, 3), 1.5)  # a third of the points measured while the machine ran 1.5x slow
    table = load_table(run_fake(tmp_path / "slow", profiler=FakeProfiler(FAST, slowdown=slow)).path)
    assert [r["latency_ms_p50"] for r in table.rows] == pytest.approx([r["latency_ms_p50"] for r in clean.rows], rel=1e-3)
    ref = table.meta["reference"]
    assert ref["baseline_ms"] == pytest.approx(1.0) and len(ref["probe_ms_by_point"]) == total
    # raw numbers can be recovered from the meta: row * probe / baseline
    row = table.rows[0]
    key = next(iter(ref["probe_ms_by_point"]))
    assert ref["probe_ms_by_point"][key] == pytest.approx(1.5) and row["latency_ms_p50"] > 0
    # without the probe the slow moments stay in the table
    off = dataclasses.replace(FAST, reference=False)
    raw = load_table(run_fake(tmp_path / "raw", profiler=FakeProfiler(off, slowdown=slow)).path)
    assert "reference" not in raw.meta
    assert max(r["latency_ms_p50"] / c["latency_ms_p50"] for r, c in zip(raw.rows, clean.rows)) == pytest.approx(1.5, rel=1e-3)


def test_a_host_whose_speed_wanders_is_called_noisy_in_the_meta(tmp_path: Path) -> None:
    """No other process, yet the probe spread 50 %: meta.json and the result say noisy host."""
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    quiet = run_fake(tmp_path / "quiet", profiler=FakeProfiler(FAST))
    load = load_table(quiet.path).meta["load"]
    assert quiet.noisy_host is False and load["noisy_host"] is False and load["probe_spread"] == pytest.approx(0.0)
    wandering = dict.fromkeys(range(1, total + 1, 3), 1.5)  # a third of the points measured while the host ran 1.5x slow
    noisy = run_fake(tmp_path / "noisy", profiler=FakeProfiler(FAST, slowdown=wandering))
    load = load_table(noisy.path).meta["load"]
    assert noisy.noisy_host is True and load["noisy_host"] is True and load["probe_spread"] == pytest.approx(0.5)
    unprobed = run_fake(tmp_path / "unprobed", profiler=FakeProfiler(dataclasses.replace(FAST, reference=False), slowdown=wandering))
    assert unprobed.noisy_host is None and "noisy_host" not in load_table(unprobed.path).meta["load"]  # not probed: unknown


def test_the_load_note_says_what_to_do() -> None:
    from profilers.run import _load_entry

    wandered = {"baseline_ms": 1.0, "probe_ms_p10_p90": [0.8, 1.3]}
    steady = {"baseline_ms": 1.0, "probe_ms_p10_p90": [0.95, 1.05]}
    assert _load_entry(0.01, False, steady, all_anchored=False)["note"] == "quiet machine"
    note = _load_entry(0.01, False, wandered, all_anchored=False)["note"]
    assert note.startswith("noisy host") and "spanned 50%" in note and "--anchor --anchor-prefill" in note
    anchored = _load_entry(0.01, False, wandered, all_anchored=True)["note"]
    assert "every row was timed beside its anchor" in anchored and "--anchor" not in anchored  # nothing more to switch on
    busy = _load_entry(0.2, True, wandered, all_anchored=False)
    assert busy["note"].startswith("measured while other processes") and busy["noisy_host"]  # our own load comes first
    assert _load_entry(0.01, False, None, all_anchored=False) == {"background_cpu_share": 0.01, "under_load": False,
                                                                   "note": "quiet machine"}


def test_the_anchor_divides_a_memory_drift_out_of_decode_rows(tmp_path: Path) -> None:
    """A drift the compute probe does not see (the memory) stays in probed rows; anchored decode rows lose it."""
    points = build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID)
    anchored = dataclasses.replace(FAST, anchor=True)
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(anchored)).path)
    drift = dict.fromkeys(range(1, len(points) + 1, 3), 1.5)  # a third of the points measured 1.5x slow
    table = load_table(run_fake(tmp_path / "drift", profiler=FakeProfiler(anchored, memory_slowdown=drift)).path)
    probed = load_table(run_fake(tmp_path / "probed", profiler=FakeProfiler(FAST, memory_slowdown=drift)).path)
    ratio = {r["phase"]: [] for r in table.rows}
    for row, base, old in zip(table.rows, clean.rows, probed.rows):
        ratio[row["phase"]].append((row["latency_ms_p50"] / base["latency_ms_p50"], old["latency_ms_p50"] / base["latency_ms_p50"]))
    assert [a for a, _ in ratio["decode"]] == pytest.approx([1.0] * len(ratio["decode"]), rel=1e-3)  # anchored: clean
    assert max(a for a, _ in ratio["prefill"]) == pytest.approx(1.5, rel=1e-3)  # prefill is not anchored
    assert max(p for _, p in ratio["decode"]) == pytest.approx(1.5, rel=1e-3)  # the probe alone keeps the drift
    info = table.meta["anchor"]
    decode = {r.key for r in points if r.phase == "decode"}
    assert set(info["anchor_by_point"]) == set(info["ratio_by_point"]) == decode
    (anchor_key,) = info["baseline_ms"]  # one decode workload in GRID, one anchor
    assert anchor_key.startswith("whole-model|decode|") and set(info["anchor_by_point"].values()) == {anchor_key}
    # the probe scaled the other rows only; raw decode rows can be recovered from the meta
    assert not decode & set(table.meta["reference"]["compute_share_by_point"])
    key = sorted(decode)[0]
    row = next(r for r in table.rows if row_key(r) == key)
    assert row["latency_ms_p50"] == pytest.approx(info["ratio_by_point"][key] * info["baseline_ms"][anchor_key], rel=1e-4)


@pytest.mark.parametrize(("decode", "prefill"), [(True, True), (False, True)])
def test_anchor_prefill_divides_a_drift_out_of_prefill_rows_too(tmp_path: Path, decode: bool, prefill: bool) -> None:
    """--anchor-prefill: prefill rows are timed beside a fixed prefill step, so a drift the probe misses leaves them too."""
    points = build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID)
    anchored = dataclasses.replace(FAST, anchor=decode, anchor_prefill=prefill)
    clean = load_table(run_fake(tmp_path / "clean", profiler=FakeProfiler(anchored)).path)
    drift = dict.fromkeys(range(1, len(points) + 1, 3), 1.5)
    table = load_table(run_fake(tmp_path / "drift", profiler=FakeProfiler(anchored, memory_slowdown=drift)).path)
    ratio: dict[str, list[float]] = {"prefill": [], "decode": []}
    for row, base in zip(table.rows, clean.rows):
        ratio[row["phase"]].append(row["latency_ms_p50"] / base["latency_ms_p50"])
    assert ratio["prefill"] == pytest.approx([1.0] * len(ratio["prefill"]), rel=1e-3)
    if decode:
        assert ratio["decode"] == pytest.approx([1.0] * len(ratio["decode"]), rel=1e-3)
    else:  # decode left to the probe keeps the drift
        assert max(ratio["decode"]) == pytest.approx(1.5, rel=1e-3)
    info = table.meta["anchor"]
    phases = {"prefill", "decode"} if decode else {"prefill"}
    expected = {p.key for p in points if p.phase in phases}
    assert set(info["anchor_by_point"]) == expected
    assert {k.split("|")[1] for k in info["baseline_ms"]} == phases  # one anchor per workload
    assert not expected & set(table.meta["reference"]["compute_share_by_point"])  # the probe scaled the others only
    assert table.meta["protocol"]["anchor_prefill"] is True


def test_an_anchored_run_killed_midway_resumes_to_the_same_table(tmp_path: Path) -> None:
    anchored = dataclasses.replace(FAST, anchor=True, rounds=2)
    whole = load_table(run_fake(tmp_path / "whole", profiler=FakeProfiler(anchored)).path)
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path / "killed", profiler=FakeProfiler(anchored, fail_after=11))
    resumed = load_table(run_fake(tmp_path / "killed", profiler=FakeProfiler(anchored)).path)
    assert [r["latency_ms_p50"] for r in resumed.rows] == pytest.approx([r["latency_ms_p50"] for r in whole.rows], rel=1e-6)
    assert resumed.meta["anchor"]["ratio_by_point"] == pytest.approx(whole.meta["anchor"]["ratio_by_point"])


def test_a_run_killed_between_passes_resumes_without_measuring_a_pass_twice(tmp_path: Path) -> None:
    three = dataclasses.replace(FAST, rounds=3)
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(three, fail_after=total + 10))  # killed in the second pass
    counter = FakeProfiler(three)
    result = run_fake(tmp_path, profiler=counter)
    # at most the passes since the last state save (every 5th) are measured again
    assert 2 * total - 10 <= counter.points_started <= 2 * total - 10 + 5
    assert result.rows == total and load_table(result.path).meta["protocol"]["rounds"] == 3


def test_run_killed_before_its_first_point_resumes(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(FAST, fail_after=0))
    result = run_fake(tmp_path)
    assert result.resumed_points == 0 and result.rows == result.measured_points
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["meta.json", "tiny-llama.csv"]


def test_resume_with_other_settings_is_refused_until_restart(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, profiler=FakeProfiler(FAST, fail_after=3))
    other = ProtocolConfig(threads=1, warmup=2, repeats=5, min_repeats=3, max_point_seconds=0.5, min_sample_ms=0.0, rounds=1)
    with pytest.raises(AnyshapeError, match="protocol differ"):
        run_fake(tmp_path, profiler=FakeProfiler(other))
    result = run_fake(tmp_path, profiler=FakeProfiler(other), restart=True)
    assert result.resumed_points == 0


def test_existing_table_needs_overwrite(tmp_path: Path) -> None:
    run_fake(tmp_path)
    with pytest.raises(AnyshapeError, match="--overwrite"):
        run_fake(tmp_path)
    assert run_fake(tmp_path, overwrite=True).rows > 0


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
        assert table.source == "roofline-estimate" and "ESTIMATE" in table.meta["note"]
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
        (["--device", HERE, "--model", "ref-decoder", "--min-sample-ms", "-1"], "protocol.min_sample_ms is -1.0; it must be >= 0"),
        (["--device", HERE, "--model", "ref-decoder", "--runtime", "onnxruntime", "--anchor"], "--anchor-prefill on onnxruntime need --no-spinning"),
        (["--device", HERE, "--model", "minilm", "--runtime", "onnxruntime", "--anchor-prefill"], "on onnxruntime need --no-spinning"),
        (["--device", "gpu", "--model", "ref-decoder", "--estimate"], "unknown device 'gpu'"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    import torch

    if "CUDA" in message and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = cli(capsys, "profile", *args, "--out", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_cli_protocol_options_reach_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import profilers.run

    seen = {}

    def fake_profile(model, device, runtime, out, *, protocol, **kwargs):  # type: ignore[no-untyped-def]
        seen["protocol"] = protocol
        raise AnyshapeError("stop here")

    monkeypatch.setattr(profilers.run, "profile", fake_profile)
    done = cli(capsys, "profile", "--device", HERE, "--model", "ref-decoder", "--runtime", "onnxruntime", "--no-spinning", "--anchor",
               "--min-sample-ms", "20", "--rounds", "15", "--out", str(tmp_path))
    assert done.returncode == 1 and "stop here" in done.stderr
    protocol = seen["protocol"]
    assert (protocol.min_sample_ms, protocol.rounds, protocol.spinning, protocol.anchor) == (20.0, 15, False, True)
    assert protocol.to_dict()["min_sample_ms"] == 20.0  # part of the run's identity: a resume with another value refuses


def test_cli_estimate_and_tables_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = cli(capsys, "profile", "--device", "jetson-orin-nano-8gb", "--model", "ref-decoder", "--estimate", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "(roofline-estimate)" in done.stdout
    listed = cli(capsys, "tables", "list", "--root", str(tmp_path), "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["device"] == "jetson-orin-nano-8gb" and entry["source"] == "roofline-estimate"
    assert entry["rows"] > 0 and entry["date"] and entry["status"] == "ok"
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
    from profilers.environment import software_versions
    from profilers.roofline import GPU_PRIOR, estimate
    from profilers.tables import write_table

    prior = load_table(estimate(SPEC, "a5000", "torch", tmp_path / "prior", grid=GRID).path)
    assert prior.meta["roofline"]["efficiency"]["source"] == GPU_PRIOR.source
    # pretend an H100 was measured (rows from the fake, filed as a measured h100 torch table)
    rows = load_table(run_fake(tmp_path / "fake", profiler=FakeProfiler(FAST, gflops=2e5, bandwidth_gb_s=1000)).path).rows
    entry = {"source": "measured", "device": "h100", "runtime": "torch", "software": software_versions()}
    write_table(tmp_path / "cal" / "h100" / "torch" / "tiny-llama.csv", rows, entry)
    calibrated = load_table(estimate(SPEC, "a5000", "torch", tmp_path / "cal", grid=GRID).path)
    assert calibrated.meta["roofline"]["efficiency"]["source"].startswith("calibrated on h100/torch/tiny-llama")
    assert calibrated.source == "roofline-estimate"


def test_verify_sets_a_measurement_at_the_tables_machine_speed(tmp_path: Path) -> None:
    from nas.verify import _protocol_like, _table_speed_rule
    from profilers.protocol import Measurement

    table = load_table(run_fake(tmp_path).path)  # the fake probe's baseline is 1 ms
    label = table.label
    small = {"flops": 1e6, "weight_bytes": 1e6, "activation_bytes": 1e5}  # fits the cache: the cores' time
    slow_moment = Measurement(11.0, 12.0, 13.0, 5, 0.01, False, 1, 1, reference_ms=1.2)
    rule = _table_speed_rule(label, tmp_path, small)
    assert rule is not None and rule.at_table_speed(slow_moment) == pytest.approx(10.0)
    # a memory-bound shape is corrected by its compute share only, as the table scaled its rows
    big = {"flops": 1e6, "weight_bytes": 8e9, "activation_bytes": 0.0}
    memory_bound = _table_speed_rule(label, tmp_path, big)
    assert memory_bound is not None and memory_bound.at_table_speed(slow_moment) == pytest.approx(12.0, rel=1e-3)
    # the same rule judges verify's passes: (baseline, share) before measuring
    assert memory_bound.baseline_ms == pytest.approx(1.0) and memory_bound.share < 0.01
    assert (rule.baseline_ms, rule.share, rule.anchor) == (pytest.approx(1.0), pytest.approx(1.0), None)
    assert _table_speed_rule(label, tmp_path / "elsewhere", small) is None
    assert _table_speed_rule(None, tmp_path, small) is None
    assert rule.at_table_speed(dataclasses.replace(slow_moment, reference_ms=None)) is None
    # an unanchored table has no anchor rule: a decode shape falls back to the probe
    assert _table_speed_rule(label, tmp_path, small, anchor="whole-model|decode|x") == rule
    assert _protocol_like(rule) is not None and not _protocol_like(rule).anchor and _protocol_like(None) is None


def test_verify_times_an_anchored_tables_decode_shapes_beside_the_same_anchor(tmp_path: Path) -> None:
    from nas.verify import _protocol_like, _table_speed_rule, whole_model_point
    from nas.workload import Workload
    from profilers.protocol import Measurement
    from profilers.workload import anchor_point

    anchored = dataclasses.replace(FAST, anchor=True, spinning=False)
    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(anchored)).path)
    space = SPEC.family.space(SPEC.config)
    shape = space.full_shape()
    point = whole_model_point(shape, Workload(phase="decode", seq_len=16))
    anchor = anchor_point(space, point).key
    baseline = table.meta["anchor"]["baseline_ms"][anchor]
    small = {"flops": 1e6, "weight_bytes": 1e6, "activation_bytes": 1e5}
    rule = _table_speed_rule(table.label, tmp_path, small, anchor=anchor)
    assert rule is not None and rule.anchor == anchor and rule.baseline_ms == pytest.approx(baseline)
    m = Measurement(11.0, 12.0, 13.0, 5, 0.01, False, 1, 1, anchor_ms=4.0, anchor_ratio=3.0)
    assert rule.at_table_speed(m) == pytest.approx(3.0 * baseline)  # the ratio, in the table's anchor
    assert rule.at_table_speed(dataclasses.replace(m, anchor_ratio=None)) is None
    protocol = _protocol_like(rule)  # verify measures as the table did: anchored, ORT threads not spinning, its sample length
    assert protocol.anchor and not protocol.spinning and protocol.min_sample_ms == FAST.min_sample_ms == 0.0
    # the anchor verify builds is the one the table used for this workload
    assert set(table.meta["anchor"]["anchor_by_point"].values()) == {anchor}
    # a prefill shape (no anchor) keeps the probe's rule
    assert _table_speed_rule(table.label, tmp_path, small).anchor is None  # type: ignore[union-attr]
    prefill_anchor = anchor_point(space, whole_model_point(shape, Workload(phase="prefill", seq_len=16))).key
    assert _table_speed_rule(table.label, tmp_path, small, anchor=prefill_anchor).anchor is None  # type: ignore[union-attr]


def test_verify_times_an_anchor_prefill_tables_prefill_shapes_beside_its_anchor(tmp_path: Path) -> None:
    from nas.verify import _protocol_like, _table_speed_rule, whole_model_point
    from nas.workload import Workload
    from profilers.workload import anchor_point

    anchored = dataclasses.replace(FAST, anchor_prefill=True, spinning=False)
    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(anchored)).path)
    space = SPEC.family.space(SPEC.config)
    point = whole_model_point(space.full_shape(), Workload(phase="prefill", seq_len=16))
    anchor = anchor_point(space, point).key
    small = {"flops": 1e6, "weight_bytes": 1e6, "activation_bytes": 1e5}
    rule = _table_speed_rule(table.label, tmp_path, small, anchor=anchor)
    assert rule is not None and rule.anchor == anchor
    assert rule.baseline_ms == pytest.approx(table.meta["anchor"]["baseline_ms"][anchor])
    protocol = _protocol_like(rule)
    assert protocol.anchored("prefill") and protocol.anchored("decode")  # verify times one phase: the table's anchor for it


def test_compute_share_follows_the_roofline() -> None:
    from profilers.run import compute_share

    decode = {"flops": 1e9, "weight_bytes": 1.9e9, "activation_bytes": 0.1e9}  # 5 ms of compute, 50 ms of memory
    assert compute_share(decode, gflops=200, bandwidth_gb_s=40, cache_bytes=32 << 20) == pytest.approx(5 / 55)
    prefill = {**decode, "flops": 1e12}
    assert compute_share(prefill, gflops=200, bandwidth_gb_s=40, cache_bytes=32 << 20) == pytest.approx(5000 / 5050)
    # bytes that fit the last-level cache, or unknown roofs: all of the time is the cores'
    assert compute_share(decode, gflops=200, bandwidth_gb_s=40, cache_bytes=4 << 30) == 1.0
    assert compute_share(decode, gflops=0, bandwidth_gb_s=40, cache_bytes=32 << 20) == 1.0


def test_rescale_scales_an_old_table_by_compute_share_from_its_probes(tmp_path: Path) -> None:
    from profilers.run import rescale_table
    from profilers.tables import row_key

    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID))
    slow = dict.fromkeys(range(1, total + 1, 3), 1.5)
    path = run_fake(tmp_path, profiler=FakeProfiler(FAST, slowdown=slow)).path
    assert rescale_table(path) == 0  # written by share already
    # as an older anyshape wrote it: every row scaled in full, no shares; and a 1 KiB cache, so bytes count
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    entry = meta["tables"][path.stem]
    del entry["reference"]["compute_share_by_point"]
    entry["fingerprint"]["l3_cache"] = "1K"
    meta_path.write_text(json.dumps(meta))
    before = load_table(path)
    changed = rescale_table(path)
    after = load_table(path)
    ref = after.meta["reference"]
    baseline, probes, shares = ref["baseline_ms"], ref["probe_ms_by_point"], ref["compute_share_by_point"]
    assert set(shares) == {row_key(r) for r in after.rows} and all(0 < s <= 1 for s in shares.values())
    assert changed == sum(1 for k, s in shares.items() if s < 0.999 and abs(probes[k] / baseline - 1) > 1e-2)
    assert changed > 0 and "rescaled" in ref
    for old, new in zip(before.rows, after.rows):
        k = row_key(old)
        raw = old["latency_ms_p50"] * probes[k] / baseline
        assert new["latency_ms_p50"] == pytest.approx(raw * (baseline / probes[k]) ** shares[k], rel=1e-4)
    assert rescale_table(path) == 0  # once is enough
    assert after.meta["fingerprint"]["l3_cache"] == "1K" and after.meta["rows"] == len(after.rows)


def test_a_run_judges_each_points_passes_by_its_compute_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept pass is chosen by the rule the rows are scaled by: p50 / probe ** compute share."""
    import profilers.run as run_module
    from profilers.protocol import kept_pass

    judged: list[float] = []

    def recording(rounds, compute_share=1.0, *, middle=False):  # type: ignore[no-untyped-def]
        judged.append(compute_share)
        assert not middle  # whole passes: the fastest
        return kept_pass(rounds, compute_share)

    from profilers.environment import Bandwidth

    monkeypatch.setattr(run_module, "kept_pass", recording)
    monkeypatch.setattr(run_module, "l3_cache_bytes", lambda text=None: 1024)  # a 1 KiB cache: bytes count
    # fixed roofs: the run measures them at its start and its end (the best is kept), and on this
    # machine the two differed enough to move a share by 0.057
    roofs = Bandwidth(copy_gb_s=20.0, read_gb_s=25.0, gemv_gb_s=10.0, buffer_mib=16, threads=1, passes=1)
    monkeypatch.setattr(run_module, "best_bandwidth", lambda *a, **k: roofs)
    monkeypatch.setattr(run_module, "measure_matmul_gflops", lambda *a, **k: 100.0)
    two = dataclasses.replace(FAST, rounds=2)
    table = load_table(run_fake(tmp_path, profiler=FakeProfiler(two, seed=0)).path)
    shares = table.meta["reference"]["compute_share_by_point"]
    assert len(judged) == len(table.rows) == len(shares)
    assert judged == pytest.approx(list(shares.values()), abs=1e-4)  # the same rule (meta.json rounds to 4 places)
    assert min(judged) < 0.5  # memory-bound points were judged nearly raw, not per probe in full
    assert table.meta["passes"]["kept"].startswith("fastest pass (p50 / reference probe ** compute share")


def _staggered_with_fast_moments(tmp_path: Path) -> Path:
    """A staggered 3-pass fake table where every fourth pass ran 30 % fast (a moment the probe over-corrected)."""
    total = len(build_points(SPEC.family, SPEC.family.space(SPEC.config), GRID)) * 3
    fast = dict.fromkeys(range(2, total + 1, 4), 0.7)
    staggered = dataclasses.replace(FAST, rounds=3, stagger=True)
    return run_fake(tmp_path, profiler=FakeProfiler(staggered, noise_cv=0.01, seed=0, memory_slowdown=fast)).path


def _judged_rows(table) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Each row's p50 at the run's speed: what its passes were judged by (p50 / probe ** share)."""
    ref = table.meta["reference"]
    return {row_key(r): r["latency_ms_p50"] / ref["baseline_ms"] ** ref["compute_share_by_point"][row_key(r)] for r in table.rows}


def test_a_staggered_run_keeps_each_points_middle_pass(tmp_path: Path) -> None:
    from profilers.run import KEPT_MIDDLE

    table = load_table(_staggered_with_fast_moments(tmp_path))
    passes = table.meta["passes"]["p50_by_point"]
    assert table.meta["passes"]["kept"] == KEPT_MIDDLE
    judged = _judged_rows(table)
    assert judged == pytest.approx({k: sorted(v)[1] for k, v in passes.items()}, rel=1e-4)
    outliers = [k for k, v in passes.items() if min(v) < 0.85 * sorted(v)[1]]
    assert outliers and all(judged[k] > 1.1 * min(passes[k]) for k in outliers)  # the fast moment was not kept


def test_rekeep_moves_an_old_staggered_table_to_its_middle_passes(tmp_path: Path) -> None:
    from profilers.run import KEPT_FASTEST, KEPT_MIDDLE, rekeep_middle_pass
    from profilers.tables import write_table

    path = _staggered_with_fast_moments(tmp_path)
    assert rekeep_middle_pass(path) == 0  # kept the middle already
    # as an older anyshape wrote it: every row from its fastest pass
    middle = load_table(path)
    passes = middle.meta["passes"]["p50_by_point"]
    old_rows = [{**r, **{c: r[c] * min(passes[row_key(r)]) / sorted(passes[row_key(r)])[1]
                         for c in ("latency_ms_p10", "latency_ms_p50", "latency_ms_p90")}} for r in middle.rows]
    entry = {k: v for k, v in middle.meta.items() if k not in ("rows", "file")}
    entry["passes"] = {**entry["passes"], "kept": KEPT_FASTEST}
    write_table(path, old_rows, entry)
    changed = rekeep_middle_pass(path)
    after = load_table(path)
    assert changed == sum(1 for v in passes.values() if sorted(v)[1] / min(v) > 1.001) > 0
    assert after.meta["passes"]["kept"] == KEPT_MIDDLE and "rekept" in after.meta["passes"]
    for new, before in zip(after.rows, middle.rows):
        assert new["latency_ms_p50"] == pytest.approx(before["latency_ms_p50"], rel=1e-4)  # the CSV keeps 6 digits
        assert new["latency_ms_p90"] == pytest.approx(before["latency_ms_p90"], rel=1e-4)
    assert rekeep_middle_pass(path) == 0  # once is enough
    unstaggered = run_fake(tmp_path / "whole", profiler=FakeProfiler(dataclasses.replace(FAST, rounds=3), seed=0)).path
    assert rekeep_middle_pass(unstaggered) == 0  # whole passes keep the fastest


def test_refiling_moves_a_cpu_table_to_the_slug_its_fingerprint_gives(tmp_path: Path) -> None:
    import shutil

    from profilers.tables import refile_cpu_tables

    made = run_fake(tmp_path / "made").path
    old = tmp_path / "root" / "cpu-amd-epyc-2c" / "fake"
    shutil.copytree(made.parent, old)
    (old / "tiny-llama.predictor.json").write_text("{}")  # a derived predictor: goes with the folder
    meta = json.loads((old / "meta.json").read_text())
    meta["device"] = "cpu-amd-epyc-2c"
    meta["tables"]["tiny-llama"].update(device="cpu-amd-epyc-2c")
    meta["tables"]["tiny-llama"]["fingerprint"].update(cpu_model="AMD EPYC", cpu_vendor="AuthenticAMD", cpu_family="25",
                                                       cpu_model_id="17", logical_cores=2)
    (old / "meta.json").write_text(json.dumps(meta))
    before = (old / "tiny-llama.csv").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "root", copy)
    moves = refile_cpu_tables(tmp_path / "root")
    target = tmp_path / "root" / "cpu-amd-epyc-zen4-2c" / "fake" / "tiny-llama.csv"
    assert moves == [(old / "tiny-llama.csv", target)]
    assert target.read_text() == before and not (tmp_path / "root" / "cpu-amd-epyc-2c").exists()
    table = load_table(target, device="cpu-amd-epyc-zen4-2c", check_software=False)
    assert table.meta["device"] == "cpu-amd-epyc-zen4-2c"
    assert refile_cpu_tables(tmp_path / "root") == []  # where it belongs now
    shutil.copytree(target.parent, copy / "cpu-amd-epyc-zen4-2c" / "fake")  # the target is taken: refused, nothing moved
    with pytest.raises(AnyshapeError, match="exists already"):
        refile_cpu_tables(copy)
    assert (copy / "cpu-amd-epyc-2c" / "fake" / "tiny-llama.csv").read_text() == before
    (copy / "cpu-amd-epyc-2c" / "fake" / "tiny-llama.csv").unlink()  # meta.json names a CSV that is gone
    with pytest.raises(AnyshapeError, match=r"names tiny-llama\.csv, which is not there"):
        refile_cpu_tables(copy)
    with pytest.raises(AnyshapeError, match="no tables folder"):
        refile_cpu_tables(tmp_path / "nowhere")
