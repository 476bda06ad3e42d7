"""Tables a pip user can find: the committed tables ship in the wheel and are found without a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_root_falls_back_to_the_packaged_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profilers.tables import find_tables_root, list_tables, packaged_tables_root

    packaged = packaged_tables_root()
    assert packaged is not None and (packaged / "cpu-amd-epyc-zen4-2c" / "torch" / "minilm.csv").is_file()
    monkeypatch.chdir(tmp_path)  # no latency_tables/ here
    assert find_tables_root() == packaged and find_tables_root("latency_tables") == packaged
    assert any(t["status"] == "ok" for t in list_tables(find_tables_root()))
    (tmp_path / "latency_tables").mkdir()  # a folder of one's own wins, even empty
    assert find_tables_root() == Path("latency_tables")
    assert find_tables_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # an explicit root is taken as given


def test_device_and_tables_list_find_the_packaged_tables_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from nas.cli import app

    monkeypatch.chdir(tmp_path)
    listed = CliRunner().invoke(app, ["tables", "list", "--json"])
    assert listed.exit_code == 0 and "cpu-amd-epyc-zen4-2c" in listed.output
    report = CliRunner().invoke(app, ["device", "--json"])
    assert report.exit_code == 0 and "latency_tables" in report.output


def test_a_read_only_tables_folder_keeps_its_predictor_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from nas.predictor.table import predictor_file

    csv_path = tmp_path / "tables" / "cpu-x-2c" / "torch" / "minilm.csv"
    csv_path.parent.mkdir(parents=True)
    assert predictor_file(csv_path) == csv_path.with_name("minilm.predictor.json")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # site-packages of a system install
    assert predictor_file(csv_path) == Path(os.environ["ANYSHAPE_CACHE_DIR"]) / "predictors" / "cpu-x-2c" / "torch" / "minilm.predictor.json"


@pytest.mark.slow
def test_the_wheel_ships_the_tables_and_the_presets(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("anyshape-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    committed = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "latency_tables").glob("*/*/*") if p.suffix in (".csv", ".json")
                       and ".predictor." not in p.name)
    assert committed and set(committed) <= names, sorted(set(committed) - names)[:5]
    assert {"profilers/presets/quiet.yaml", "profilers/presets/shared-vm.yaml", "profilers/presets/live.yaml"} <= names
    assert not any(".predictor." in n for n in names)  # derived files stay out
