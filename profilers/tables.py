"""Latency tables on disk: ``<root>/<device>/<runtime>/<name>.csv`` plus ``meta.json`` beside it.

``meta.json`` holds one entry per table of that folder (``tables.<name>``), a :class:`TableMeta`:
source (``measured`` or ``roofline-estimate``), device fingerprint, software versions, the
protocol and its measurement model (:class:`profilers.protocol.MeasurementModel`), grid, date,
rows, build time and load. Tables are read only by an explicit :func:`load_table`, which
validates them and raises one-line :class:`~nas.errors.AnyshapeError` messages.

A run writes rows to ``<name>.csv.partial`` (one flushed line per point) and its settings to
``.<name>.run.json``; a killed run started again with the same settings skips the points it has.
The final CSV and meta.json entry are written atomically at the end.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from nas._io import folder_lock, write_json_atomic, write_text_atomic
from nas.errors import AnyshapeError
from profilers.protocol import MeasurementModel, ProtocolConfig

TABLE_FORMAT = "anyshape/latency-table-v2"
#: Formats this version no longer reads (their protocols were replaced by the presets).
OLD_FORMATS = ("anyshape/latency-table-v1",)
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


#: The tables folder every command defaults to (relative: the checkout you run in).
DEFAULT_ROOT = "latency_tables"


def packaged_tables_root() -> Path | None:
    """The tables shipped inside the installed package (None where it has none, e.g. an odd install)."""
    from importlib import resources

    try:
        root = Path(str(resources.files("latency_tables")))
    except (ModuleNotFoundError, TypeError):
        return None
    return root if any(root.glob("*/*/meta.json")) else None


def find_tables_root(root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """``root``, or, where it is the default and this folder has none, the tables shipped with the package.

    A checkout (or any folder with a ``latency_tables/`` of its own) uses its own; a pip user
    anywhere else gets the committed tables without naming a path. An explicit ``--tables``
    is taken as given.
    """
    path = Path(root)
    if path == Path(DEFAULT_ROOT) and not path.is_dir():
        packaged = packaged_tables_root()
        if packaged is not None:
            return packaged
    return path


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


@dataclass
class TableMeta:
    """One table's entry in its folder's meta.json: what it is, how it was measured, and what the run saw.

    Measured tables carry their ``protocol`` and ``measurement`` (the speed reference and, where
    anchored, each anchor's median over the run, plus every point's anchor and ratio); from those
    :meth:`measurement_model` builds the one :class:`~profilers.protocol.MeasurementModel` that
    the profiler wrote the rows with and that ``verify`` measures by. ``converted`` records a
    table measured by an earlier format and carried over (what its rows are, what was kept).
    """

    source: str
    device: str
    runtime: str
    model: str
    family: str
    kind: str
    config_sha256: str
    shape_space: dict[str, Any]
    date: str
    software: dict[str, Any]
    grid: dict[str, Any]
    composition: str
    rows: int = 0
    file: str = ""
    # measured tables
    protocol: ProtocolConfig | None = None
    measurement: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    runtime_info: dict[str, Any] = field(default_factory=dict)
    matmul_gflops: float | None = None
    memory_bandwidth: dict[str, Any] | None = None
    build_seconds: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)
    noisy_points: int = 0
    load: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, Any] = field(default_factory=dict)
    converted: dict[str, Any] | None = None
    # roofline estimates
    device_spec: dict[str, Any] = field(default_factory=dict)
    roofline: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise AnyshapeError(f"table source is {self.source!r}; expected one of {', '.join(SOURCES)}")
        if self.source == "measured":
            if self.protocol is None:
                raise AnyshapeError("a measured table's meta needs its protocol")
            reference = self.measurement.get("reference")
            if reference != self.protocol.reference:
                raise AnyshapeError(f"meta measurement.reference is {reference!r} but protocol {self.protocol.name} "
                                    f"uses {self.protocol.reference!r}")
            self.measurement_model()  # checks the baselines

    @property
    def measured(self) -> bool:
        return self.source == "measured"

    def measurement_model(self) -> MeasurementModel | None:
        """The rule the rows were written with (None for an estimate)."""
        if self.protocol is None:
            return None
        return MeasurementModel(self.protocol, {str(k): float(v) for k, v in (self.measurement.get("baseline_ms") or {}).items()})

    def anchor_of(self, key: str) -> str | None:
        """The anchor point key row ``key`` was timed beside (None: not anchored)."""
        return (self.measurement.get("anchor_by_point") or {}).get(key)

    @property
    def noisy_host(self) -> bool:
        return bool(self.load.get("noisy_host"))

    @property
    def bandwidth_gb_s(self) -> float:
        """The memory bandwidth measured beside the run (GB/s; 0 where unknown)."""
        return float((self.memory_bandwidth or {}).get("bound_gb_s") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": TABLE_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ProtocolConfig):
                value = value.to_dict()
            required = f.default is MISSING and f.default_factory is MISSING
            if value in (None, {}, [], "") and not required and f.name != "rows":
                continue  # an optional field left empty (required ones are always written)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> TableMeta:
        """Validate a meta.json entry (one line naming ``where`` on any problem)."""
        if not isinstance(data, Mapping):
            raise AnyshapeError(f"{where}: the table's entry is not a JSON object")
        fmt = data.get("format", TABLE_FORMAT)
        if fmt in OLD_FORMATS:
            raise AnyshapeError(f"{where}: the table is {fmt}, measured with a protocol this version no longer has; "
                                "measure it again with anyshape profile --protocol quiet|shared-vm ... --overwrite")
        if fmt != TABLE_FORMAT:
            raise AnyshapeError(f"{where}: the table's format is {fmt!r}, expected {TABLE_FORMAT}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k != "format"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AnyshapeError(f"{where}: unknown meta field(s) {unknown}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in values]
        if missing:
            raise AnyshapeError(f"{where}: meta misses {missing}; rebuild the table with anyshape profile")
        if values.get("protocol") is not None:
            values["protocol"] = ProtocolConfig.from_dict(values["protocol"], where=f"{where}: protocol")
        try:
            return cls(**values)
        except TypeError as e:
            raise AnyshapeError(f"{where}: {e}") from None


def read_meta(folder: Path) -> dict[str, Any]:
    """A folder's meta.json as JSON (entries unchecked: :meth:`TableMeta.from_dict` checks one)."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnyshapeError(f"{path} is missing; a table needs the meta.json written beside it by anyshape profile") from None
    except (OSError, json.JSONDecodeError) as e:
        raise AnyshapeError(f"{path} is not valid JSON ({e}); rebuild the table with anyshape profile") from None
    if isinstance(meta, dict) and meta.get("format") in OLD_FORMATS:
        raise AnyshapeError(f"{path} is {meta['format']}, measured with a protocol this version no longer has; measure its "
                            "tables again with anyshape profile --protocol quiet|shared-vm ... --overwrite")
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT or not isinstance(meta.get("tables"), dict):
        raise AnyshapeError(f"{path} is not an {TABLE_FORMAT} meta file")
    return meta


def table_meta(csv_path: Path) -> TableMeta:
    """The checked meta of the table at ``csv_path`` (without reading its rows)."""
    folder, name = csv_path.parent, csv_path.stem
    entry = read_meta(folder)["tables"].get(name)
    if not isinstance(entry, dict):
        raise AnyshapeError(f"{folder / 'meta.json'} has no entry for table {name!r}; rebuild it with anyshape profile")
    return TableMeta.from_dict(entry, f"{folder / 'meta.json'} table {name!r}")


def write_table(csv_path: Path, rows: Sequence[Mapping[str, Any]], meta: TableMeta) -> None:
    """Write the CSV and its meta.json entry, both atomically."""
    entry = {**meta.to_dict(), "rows": len(rows), "file": csv_path.name}
    _file_table(csv_path, format_rows(rows), entry)
    meta.rows, meta.file = len(rows), csv_path.name


def _file_table(csv_path: Path, text: str, entry: Mapping[str, Any]) -> None:
    """Write a table's CSV text and put its entry into its folder's meta.json, both atomically, under the folder's lock."""
    folder = csv_path.parent
    device, runtime, name = folder.parent.name, folder.name, csv_path.stem
    with folder_lock(folder):
        # an unreadable meta.json is refused, not replaced: it describes the other tables of the folder
        meta: dict[str, Any] = read_meta(folder) if (folder / "meta.json").exists() else {
            "format": TABLE_FORMAT, "device": device, "runtime": runtime, "tables": {}}
        write_text_atomic(csv_path, text)
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
    meta: TableMeta
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def source(self) -> str:
        return self.meta.source

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
    folder_meta = read_meta(folder)
    entry = folder_meta["tables"].get(name)
    if not isinstance(entry, dict):
        raise AnyshapeError(f"{folder / 'meta.json'} has no entry for table {name!r}; rebuild it with anyshape profile")
    meta = TableMeta.from_dict(entry, f"{folder / 'meta.json'} table {name!r}")
    if folder_meta.get("device") != folder_device or meta.device != folder_device:
        raise AnyshapeError(
            f"{csv_path} sits under {folder_device!r} but its meta.json says device {meta.device or folder_meta.get('device')!r}; "
            "tables must stay in their device's folder"
        )
    if folder_meta.get("runtime") != folder_runtime or meta.runtime != folder_runtime:
        raise AnyshapeError(f"{csv_path} sits under runtime {folder_runtime!r} but its meta.json says {meta.runtime!r}")
    if device is not None and folder_device != device:
        raise AnyshapeError(f"table {csv_path} is for device {folder_device!r}, not {device!r}; profile {device} to get one")
    if runtime is not None and folder_runtime != runtime:
        raise AnyshapeError(f"table {csv_path} is for runtime {folder_runtime!r}, not {runtime!r}")
    if check_software and meta.measured:
        _check_software(csv_path, folder_runtime, meta)
    try:
        text = csv_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read {csv_path}: {e}") from None
    rows = parse_rows(text, str(csv_path))
    if meta.rows != len(rows):
        raise AnyshapeError(f"{csv_path} has {len(rows)} rows, its meta.json says {meta.rows}; the file is truncated or edited")
    return LatencyTable(csv_path, folder_device, folder_runtime, name, meta, rows)


def _check_software(csv_path: Path, runtime: str, meta: TableMeta) -> None:
    from profilers.environment import major_minor, software_versions

    package = RUNTIME_PACKAGES.get(runtime)
    if package is None:
        return
    recorded = meta.software.get(package)
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
        entry = entry if isinstance(entry, dict) else {}
        info.update(
            source=entry.get("source", "unknown"),
            rows=entry.get("rows"),
            date=entry.get("date"),
            model=entry.get("model"),
            under_load=(entry.get("load") or {}).get("under_load"),
            noisy_host=(entry.get("load") or {}).get("noisy_host"),
            protocol=(entry.get("protocol") or {}).get("name"),
        )
        try:
            load_table(csv_path, check_software=True)
            info["status"] = "ok"
        except AnyshapeError as e:
            info["status"] = str(e)
        out.append(info)
    return out
