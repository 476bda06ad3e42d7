"""Latency tables on disk: ``<root>/<device>/<runtime>/<name>.csv`` plus ``meta.json`` beside it.

``meta.json`` holds one entry per table of that folder (``tables.<name>``): source
(``measured`` or ``roofline-estimate``), device fingerprint, software versions, protocol, grid,
date, rows, build time and load. Tables are read only by an explicit :func:`load_table`, which
validates them and raises one-line :class:`~nas.errors.AnyshapeError` messages.

A run writes rows to ``<name>.csv.partial`` (one flushed line per point) and its settings to
``.<name>.run.json``; a killed run started again with the same settings skips the points it has.
The final CSV and meta.json entry are written atomically at the end.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas._io import folder_lock, write_json_atomic, write_text_atomic
from nas.errors import AnyshapeError

TABLE_FORMAT = "anyshape/latency-table-v1"
SOURCES = ("measured", "roofline-estimate")

#: Column name -> type, in file order.
COLUMN_TYPES: dict[str, type] = {
    "block": str,
    "phase": str,
    "batch": int,
    "seq_len": int,
    "context_len": int,
    "depth": int,
    "heads": int,
    "kv_heads": int,
    "ffn": int,
    "dtype": str,
    "threads": int,
    "latency_ms_p10": float,
    "latency_ms_p50": float,
    "latency_ms_p90": float,
    "repeats": int,
    "cv": float,
    "noisy": bool,
    "flops": float,
    "weight_bytes": float,
    "activation_bytes": float,
}
COLUMNS = tuple(COLUMN_TYPES)
KEY_COLUMNS = ("block", "phase", "batch", "seq_len", "context_len", "depth", "heads", "kv_heads", "ffn", "dtype")
#: Which installed package a measured table's runtime depends on (major.minor must match to load).
RUNTIME_PACKAGES = {"torch": "torch", "onnxruntime": "onnxruntime"}


def row_key(row: Mapping[str, Any]) -> str:
    """The point key of a row (same as :attr:`profilers.workload.BlockPoint.key`)."""
    r = row
    return (
        f"{r['block']}|{r['phase']}|b{r['batch']}|s{r['seq_len']}|c{r['context_len']}|"
        f"d{r['depth']}|h{r['heads']}|k{r['kv_heads']}|f{r['ffn']}|{r['dtype']}"
    )


def table_csv_path(root: str | os.PathLike[str], device: str, runtime: str, name: str) -> Path:
    for label, value in (("device", device), ("runtime", runtime), ("table name", name)):
        if not value or "/" in value or value.startswith("."):
            raise AnyshapeError(f"{label} {value!r} cannot be a folder or file name")
    return Path(root) / device / runtime / f"{name}.csv"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- rows


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e5 or value == 0 else f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def format_rows(rows: Sequence[Mapping[str, Any]], header: bool = True) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_format(row[c]) for c in COLUMNS])
    return buf.getvalue()


def _parse_value(column: str, text: str, where: str) -> Any:
    kind = COLUMN_TYPES[column]
    try:
        if kind is bool:
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            if math.isnan(value):
                raise ValueError(text)
            return value
    except ValueError:
        raise AnyshapeError(f"{where}: column {column} has {text!r}, not a {kind.__name__}") from None
    return text


def parse_rows(text: str, where: str) -> list[dict[str, Any]]:
    """Rows of a table CSV, checked column by column; errors name the file and line."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise AnyshapeError(f"{where} is empty; rebuild it with anyshape profile") from None
    except csv.Error as e:
        raise AnyshapeError(f"{where} is not valid CSV ({e}); rebuild it with anyshape profile") from None
    if tuple(header) != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        detail = f"missing {missing}" if missing else ""
        detail += ("; " if detail and extra else "") + (f"unexpected {extra}" if extra else "")
        raise AnyshapeError(f"{where} has the wrong columns ({detail or 'wrong order'}); expected {TABLE_FORMAT} columns")
    rows = []
    try:
        for lineno, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(COLUMNS):
                raise AnyshapeError(f"{where} line {lineno}: {len(values)} fields, expected {len(COLUMNS)} (truncated or corrupted)")
            row = {c: _parse_value(c, v, f"{where} line {lineno}") for c, v in zip(COLUMNS, values)}
            if not 0 <= row["latency_ms_p10"] <= row["latency_ms_p50"] <= row["latency_ms_p90"]:
                raise AnyshapeError(f"{where} line {lineno}: latencies must satisfy 0 <= p10 <= p50 <= p90")
            rows.append(row)
    except csv.Error as e:
        raise AnyshapeError(f"{where} is not valid CSV ({e}); rebuild it with anyshape profile") from None
    return rows


# --------------------------------------------------------------------------- meta.json


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnyshapeError(f"{path} is missing; a table needs the meta.json written beside it by anyshape profile") from None
    except (OSError, json.JSONDecodeError) as e:
        raise AnyshapeError(f"{path} is not valid JSON ({e}); rebuild the table with anyshape profile") from None
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT or not isinstance(meta.get("tables"), dict):
        raise AnyshapeError(f"{path} is not an {TABLE_FORMAT} meta file")
    return meta


def write_table(csv_path: Path, rows: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> None:
    """Write the CSV and its meta.json entry, both atomically."""
    if entry.get("source") not in SOURCES:
        raise ValueError(f"meta source must be one of {SOURCES}, got {entry.get('source')!r}")
    _file_table(csv_path, format_rows(rows), {**entry, "rows": len(rows)})


def _file_table(csv_path: Path, text: str, entry: Mapping[str, Any]) -> None:
    """Write a table's CSV text and put its entry into its folder's meta.json, both atomically, under the folder's lock."""
    folder = csv_path.parent
    device, runtime, name = folder.parent.name, folder.name, csv_path.stem
    with folder_lock(folder):
        write_text_atomic(csv_path, text)
        try:
            meta = read_meta(folder)
        except AnyshapeError:
            meta = {"format": TABLE_FORMAT, "device": device, "runtime": runtime, "tables": {}}
        meta["tables"][name] = {**entry, "file": csv_path.name}
        meta["tables"] = dict(sorted(meta["tables"].items()))
        write_json_atomic(folder / "meta.json", meta)


# --------------------------------------------------------------------------- loading


@dataclass
class LatencyTable:
    """A validated table: where it is, what it says about itself, and its rows."""

    path: Path
    device: str
    runtime: str
    name: str
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def source(self) -> str:
        return str(self.meta["source"])

    @property
    def label(self) -> str:
        """How to show where a number comes from: never present an estimate as a measurement."""
        return f"{self.device}/{self.runtime}/{self.name} ({self.source})"

    def select(self, **filters: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r[k] == v for k, v in filters.items())]

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(COLUMNS))


def load_table(
    path: str | os.PathLike[str],
    *,
    device: str | None = None,
    runtime: str | None = None,
    check_software: bool = True,
) -> LatencyTable:
    """Load and validate ``<device>/<runtime>/<name>.csv``.

    ``device`` / ``runtime``: the table must be for these. ``check_software``: a measured table
    must come from the installed major.minor version of its runtime package (torch, onnxruntime).
    """
    csv_path = Path(path)
    if csv_path.is_dir() or csv_path.suffix != ".csv":
        raise AnyshapeError(f"{csv_path} is not a table; give the path of a <device>/<runtime>/<name>.csv file")
    if not csv_path.is_file():
        raise AnyshapeError(f"no latency table at {csv_path}; build it with anyshape profile")
    folder = csv_path.parent
    folder_device, folder_runtime, name = folder.parent.name, folder.name, csv_path.stem
    meta = read_meta(folder)
    entry = meta["tables"].get(name)
    if not isinstance(entry, dict):
        raise AnyshapeError(f"{folder / 'meta.json'} has no entry for table {name!r}; rebuild it with anyshape profile")
    if meta.get("device") != folder_device or entry.get("device") != folder_device:
        raise AnyshapeError(
            f"{csv_path} sits under {folder_device!r} but its meta.json says device {entry.get('device') or meta.get('device')!r}; "
            "tables must stay in their device's folder"
        )
    if meta.get("runtime") != folder_runtime:
        raise AnyshapeError(f"{csv_path} sits under runtime {folder_runtime!r} but its meta.json says {meta.get('runtime')!r}")
    if device is not None and folder_device != device:
        raise AnyshapeError(f"table {csv_path} is for device {folder_device!r}, not {device!r}; profile {device} to get one")
    if runtime is not None and folder_runtime != runtime:
        raise AnyshapeError(f"table {csv_path} is for runtime {folder_runtime!r}, not {runtime!r}")
    source = entry.get("source")
    if source not in SOURCES:
        raise AnyshapeError(f"{folder / 'meta.json'}: table {name!r} has source {source!r}; expected one of {', '.join(SOURCES)}")
    if check_software and source == "measured":
        _check_software(csv_path, folder_runtime, entry)
    try:
        text = csv_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read {csv_path}: {e}") from None
    rows = parse_rows(text, str(csv_path))
    if entry.get("rows") != len(rows):
        raise AnyshapeError(f"{csv_path} has {len(rows)} rows, its meta.json says {entry.get('rows')}; the file is truncated or edited")
    return LatencyTable(csv_path, folder_device, folder_runtime, name, entry, rows)


def _check_software(csv_path: Path, runtime: str, entry: Mapping[str, Any]) -> None:
    from profilers.environment import major_minor, software_versions

    package = RUNTIME_PACKAGES.get(runtime)
    if package is None:
        return
    recorded = (entry.get("software") or {}).get(package)
    installed = software_versions().get(package)
    if major_minor(recorded) != major_minor(installed):
        raise AnyshapeError(
            f"table {csv_path} was measured with {package} {recorded}, this environment has {installed}; "
            "re-profile with the installed version (or load with check_software=False)"
        )


def list_tables(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every table under ``root`` with device, runtime, name, source, rows, date and a status."""
    root = Path(root)
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for csv_path in sorted(root.glob("*/*/*.csv")):
        folder = csv_path.parent
        info: dict[str, Any] = {
            "device": folder.parent.name,
            "runtime": folder.name,
            "name": csv_path.stem,
            "path": str(csv_path),
            "size_bytes": csv_path.stat().st_size,
        }
        try:
            entry = read_meta(folder)["tables"].get(csv_path.stem) or {}
        except AnyshapeError:
            entry = {}
        info.update(
            source=entry.get("source", "unknown"),
            rows=entry.get("rows"),
            date=entry.get("date"),
            model=entry.get("model"),
            under_load=entry.get("load", {}).get("under_load"),
            noisy_host=entry.get("load", {}).get("noisy_host"),
        )
        try:
            load_table(csv_path, check_software=True)
            info["status"] = "ok"
        except AnyshapeError as e:
            info["status"] = str(e)
        out.append(info)
    return out


# --------------------------------------------------------------------------- refiling


def refile_cpu_tables(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Move every measured CPU table to the slug its own fingerprint gives; returns (from, to) pairs.

    For tables filed before a slug named the microarchitecture of a CPU whose model name has no
    model number (``cpu-amd-epyc-2c`` held Zen 3 and Zen 4 tables). The CSV moves as it is, its
    meta.json entry moves with ``device`` set to the new slug, and emptied folders are removed;
    nothing is measured. A table already at the target is an error (nothing moved for it).
    """
    from profilers.environment import fingerprint_slug

    root = Path(root)
    if not root.is_dir():
        raise AnyshapeError(f"no tables folder {root}")
    moves: list[tuple[Path, Path]] = []
    emptied: list[Path] = []
    for folder in sorted(p for p in root.glob("cpu-*/*") if (p / "meta.json").is_file()):
        for name, entry in list(read_meta(folder)["tables"].items()):
            fp = entry.get("fingerprint") or {}
            if entry.get("source") != "measured" or not fp.get("cpu_family"):
                continue
            slug = fingerprint_slug(fp)
            if slug == folder.parent.name:
                continue
            source, target = folder / str(entry.get("file") or f"{name}.csv"), root / slug / folder.name / f"{name}.csv"
            if not source.is_file():
                raise AnyshapeError(f"cannot refile {name}: {folder / 'meta.json'} names {source.name}, which is not there")
            if target.exists():
                raise AnyshapeError(f"cannot refile {source}: {target} exists already")
            _file_table(target, source.read_text(), {**entry, "device": slug})  # written before the source goes
            with folder_lock(folder):
                meta = read_meta(folder)
                del meta["tables"][name]
                source.unlink()
                if meta["tables"]:
                    write_json_atomic(folder / "meta.json", meta)
                else:
                    (folder / "meta.json").unlink()
                    emptied.append(folder)
            moves.append((source, target))
    for folder in emptied:  # their derived predictors go too, then the folders if nothing else is left
        for derived in folder.glob("*.predictor.*"):
            derived.unlink()
        for empty in (folder, folder.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()
    return moves
