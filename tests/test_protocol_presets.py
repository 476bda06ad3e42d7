"""The protocol presets (profilers/presets/*.yaml): complete, headed by the commands that use them, and what the code uses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from profilers.protocol import (
    DEFAULT_PRESET,
    LIVE_PRESET,
    ProtocolConfig,
    live_protocol,
    load_protocol,
    preset_names,
    preset_text,
)

#: Fields a preset does not set: the machine's (threads, pin_cpus) and the name (the file's).
MACHINE_FIELDS = {"name", "threads", "pin_cpus"}


def _commands(name: str) -> list[str]:
    """The commands a preset's header names: ``# Used by: anyshape profile --protocol quiet, anyshape verify ...``."""
    first = preset_text(name).splitlines()[0]
    assert first.startswith("# Used by: anyshape "), f"{name}.yaml must start with '# Used by: anyshape <command>'"
    return re.findall(r"anyshape ([a-z-]+)", first)


def test_the_presets_shipped_are_the_ones_the_code_names() -> None:
    assert {"quiet", "shared-vm", "live"} <= set(preset_names())
    assert DEFAULT_PRESET in preset_names() and LIVE_PRESET in preset_names()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_complete_and_headed_by_commands_that_exist(name: str) -> None:
    import yaml

    from nas.cli import app

    data = yaml.safe_load(preset_text(name))
    every = {f.name for f in dataclasses.fields(ProtocolConfig)} - MACHINE_FIELDS
    assert set(data) == every, f"{name}.yaml sets {sorted(set(data))}; a preset sets every field but {sorted(MACHINE_FIELDS)}"
    protocol = load_protocol(name)
    assert protocol.name == name and protocol == ProtocolConfig(**{**data, "name": name})
    known = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    commands = _commands(name)
    assert commands and set(commands) <= known, f"{name}.yaml names {commands}; the CLI has {sorted(known)}"
    if protocol.anchored:  # ONNX Runtime's spinning threads would slow the anchor timed after a sample
        assert protocol.spinning is False


def test_the_profile_presets_are_the_ones_profile_offers(capsys: pytest.CaptureFixture[str]) -> None:
    from typer.testing import CliRunner

    from nas.cli import app

    profile_presets = [n for n in preset_names() if f"anyshape profile --protocol {n}" in preset_text(n).splitlines()[0]]
    assert set(profile_presets) == {"quiet", "shared-vm"}
    text = CliRunner().invoke(app, ["profile", "--help"], env={"COLUMNS": "300"}).output
    for name in profile_presets:
        assert name in text


def test_code_defaults_are_the_quiet_preset() -> None:
    """ProtocolConfig() and quiet.yaml cannot drift apart: tests and library callers get what the CLI gets."""
    assert dataclasses.replace(load_protocol("quiet"), name="custom") == ProtocolConfig()
    live = live_protocol()
    assert live.name == "live" and live.reference == "none" and live.rounds == 5
    assert load_protocol("shared-vm").reference == "anchor"


def test_a_protocol_file_extends_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "staggered.yaml"
    path.write_text("extends: shared-vm\nstagger: true\nrounds: 7\n")
    protocol = load_protocol(str(path), threads=1)
    assert protocol.name == "staggered.yaml" and protocol.stagger and protocol.rounds == 7 and protocol.threads == 1
    assert protocol.reference == "anchor" and protocol.spinning is False  # the rest from shared-vm
    assert load_protocol(str(path), threads=None).threads == ProtocolConfig().threads  # None: not an override
    plain = tmp_path / "plain.json"
    plain.write_text('{"rounds": 2}')
    assert load_protocol(str(plain)).reference == "none"  # extends quiet by default


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rounds: 0\n", r"protocol\.rounds is 0"),
        ("reference: probe\n", r"protocol\.reference is 'probe'; allowed: none, anchor"),
        ("anchor_prefill: true\n", r"unknown field\(s\) \['anchor_prefill'\]"),
        ("extends: noisy\n", r"extends 'noisy'; presets: "),
        ("- 1\n- 2\n", r"must hold a mapping"),
        ("rounds: [\n", r"cannot read protocol file"),
        ("stagger: maybe\n", r"protocol\.stagger is 'maybe'; it must be true or false"),
        ("extends: loud\n", "extends 'loud'; presets: live, quiet, shared-vm"),
        ("rounds: 2\nanchor: true\n", r"unknown field\(s\) \['anchor'\]"),
        ("rounds: [1\n", "cannot read protocol file"),
    ],
)
def test_a_bad_protocol_file_gets_one_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(AnyshapeError, match=match) as info:
        load_protocol(str(path))
    assert "\n" not in str(info.value)


def test_the_shipped_presets() -> None:
    assert preset_names() == ["live", "quiet", "shared-vm"]
    quiet, shared, live = load_protocol("quiet"), load_protocol("shared-vm"), live_protocol()
    assert (quiet.name, quiet.reference, quiet.rounds) == ("quiet", "none", 3)
    assert (shared.name, shared.reference, shared.spinning) == ("shared-vm", "anchor", False) and shared.anchored
    assert (live.name, live.reference, live.rounds) == ("live", "none", 5) and live == load_protocol("live")
    assert load_protocol() == load_protocol(None) == quiet  # the default
    for name in preset_names():
        assert preset_text(name).startswith("# Used by:")  # each says which command uses it
        load_protocol(name)  # and loads
    with pytest.raises(AnyshapeError, match="unknown protocol preset 'loud'"):
        preset_text("loud")


def test_overrides_win_over_the_preset_and_none_is_ignored() -> None:
    mine = load_protocol("shared-vm", threads=1, pin_cpus=None, rounds=None)
    assert mine.threads == 1 and mine.pin_cpus is None and mine.rounds == load_protocol("shared-vm").rounds
    assert load_protocol(mine) == mine and load_protocol(mine, rounds=2).rounds == 2  # a ProtocolConfig passes through
    with pytest.raises(AnyshapeError, match=r"protocol.threads is 0"):
        load_protocol("quiet", threads=0)


def test_a_protocol_file_extends_a_preset_with_what_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "slow-vm.yaml"
    path.write_text("extends: shared-vm\nrounds: 7\nmin_sample_ms: 20\n")
    got = load_protocol(str(path), threads=1)
    assert dataclasses.replace(got, name="shared-vm", rounds=5, min_sample_ms=2.0) == load_protocol("shared-vm", threads=1)
    assert (got.name, got.rounds, got.min_sample_ms, got.reference) == ("slow-vm.yaml", 7, 20, "anchor")
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: my-quiet\nrepeats: 30\n")  # no extends: the default preset
    got = load_protocol(str(plain))
    assert got.name == "my-quiet" and got.repeats == 30 and got.reference == "none" and got.rounds == load_protocol("quiet").rounds
    json_file = tmp_path / "p.json"  # YAML reads JSON too
    json_file.write_text('{"extends": "live", "warmup": 1}')
    assert load_protocol(str(json_file)).warmup == 1 and load_protocol(str(json_file)).rounds == 5


def test_an_unknown_preset_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnyshapeError, match="no such preset or file; presets: live, quiet, shared-vm"):
        load_protocol("loud")
    with pytest.raises(AnyshapeError, match="no such preset or file"):
        load_protocol(str(tmp_path / "missing.yaml"))


def test_a_table_record_from_a_bigger_machine_loads_but_is_not_run_here() -> None:
    """A meta.json written on 64 cores loads anywhere; only profiling with it here is refused."""
    from profilers.fake import FakeProfiler

    big = ProtocolConfig(threads=512)
    with pytest.raises(AnyshapeError, match=r"protocol\.threads is 512; allowed range"):
        FakeProfiler(big)
