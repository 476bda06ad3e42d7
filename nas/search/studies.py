"""Searches as files: a YAML study file names one supernet search; a batch runs many of them.

A study file (``studies/*.yaml``) holds what ``anyshape search`` takes as flags::

    # anyshape search --config studies/minilm-xeon-10ms.yaml
    study: minilm-xeon-10ms            # default: the file's name
    supernet: ../nas/assets/minilm-supernet   # relative to this file
    device: cpu-xeon-f6m167-2c
    runtime: torch
    workload: prefill:b1:s128
    latency_budget_ms: 10
    trials: 200

Paths in the file (``supernet``, ``model`` when it is a path, ``tables``, task files of
``metric``) are relative to the file's folder, so a study file means the same from any working
directory; so is its default storage, ``<study>/study.db`` beside the file. :func:`run_batch` runs study files on N worker processes against one storage (or each
study's own SQLite file); every study resumes where it stopped (Optuna's heartbeat fails a
killed worker's running trial, and the trial is retried), so re-running a killed batch finishes
it without losing or repeating a trial.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError

#: Keys a study file may hold, with the type each must have.
STUDY_KEYS: dict[str, type | tuple[type, ...]] = {
    "study": str, "supernet": str, "model": str, "device": str, "runtime": str, "workload": str, "trials": int,
    "latency_budget_ms": (int, float), "memory_budget_mb": (int, float), "memory_objective": bool, "storage": str,
    "workers": int, "seed": int, "sampler": str, "metric": str, "calibration": bool, "tables": str, "table": str,
    "factory": str, "factory_args": dict,
}
REQUIRED_KEYS = ("supernet", "device", "runtime", "trials")
_KIND_WORDS: dict[Any, str] = {str: "a string", int: "an integer", bool: "true or false", dict: "a mapping"}
#: Keys of a supernet search that a study with its own ``factory`` (a custom search problem) does not take.
SUPERNET_KEYS = ("supernet", "model", "metric", "calibration", "tables", "table")


def metric_factory_args(metric: str, base: Path | None = None) -> dict[str, str]:
    """``--metric`` as factory arguments: none for the default (so older studies resume), the task file's
    absolute path and sha256 for a task (so a study refuses a changed file); task paths relative to ``base``."""
    from nas.supernet.tasks import load_task

    if metric == "default":
        return {}
    if metric in ("cosine", "perplexity", "token_accuracy"):
        return {"metric": metric}
    kind, _, path = metric.partition(":")
    file = Path(path) if base is None or Path(path).is_absolute() else base / path
    load_task(f"{kind}:{file}")  # a bad file fails here, in one line, before any worker starts
    file = file.absolute()
    return {"metric": f"{kind}:{file}", "metric_sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def supernet_search_config(*, supernet: Path, device: str, runtime: str, trials: int, study: str | None = None,
                           model: str | None = None, tables: Path = Path("latency_tables"), table: str | None = None,
                           calibration: bool = True, metric: str = "default", metric_base: Path | None = None,
                           workload: str = "prefill:b1:s128", **options: Any) -> Any:
    """The :class:`~nas.search.run.SearchConfig` of a search over ``supernet``'s shapes (the CLI's and a study file's)."""
    from nas.search.run import SearchConfig
    from nas.workload import Workload

    return SearchConfig(
        study=study or f"{supernet.absolute().name}-{device}-{runtime}",
        trials=trials,
        factory="nas.search.factory:supernet_problem",
        factory_args={"supernet": str(supernet.absolute()), "model": model, "tables": str(tables.absolute()), "table": table,
                      "calibrated": calibration, **metric_factory_args(metric, metric_base)},
        device=device, runtime=runtime, workload=Workload.parse(workload), **options,
    )


@dataclass(frozen=True)
class StudyFile:
    path: Path
    command: str | None  # the command its first comment line names
    config: Any  # SearchConfig


def load_study_file(path: str | Path, *, storage: str | None = None, workers: int | None = None) -> StudyFile:
    """Read and check a study file; ``storage`` / ``workers`` override the file's."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise AnyshapeError(f"study file {path} does not exist")
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AnyshapeError(f"study file {path} is not readable YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise AnyshapeError(f"study file {path} must be a mapping of keys ({', '.join(REQUIRED_KEYS)}, ...)")
    unknown = sorted(set(data) - set(STUDY_KEYS))
    if unknown:
        raise AnyshapeError(f"study file {path} has unknown keys {unknown}; allowed: {', '.join(STUDY_KEYS)}")
    custom = data.get("factory") is not None
    if custom and any(k in data for k in SUPERNET_KEYS):
        raise AnyshapeError(f"study file {path}: a custom factory takes factory_args, not {', '.join(k for k in SUPERNET_KEYS if k in data)}")
    if "factory_args" in data and not custom:
        raise AnyshapeError(f"study file {path}: factory_args needs a factory (module:function)")
    missing = [k for k in REQUIRED_KEYS if data.get(k) is None and not (custom and k == "supernet")]
    if missing:
        raise AnyshapeError(f"study file {path} lacks {', '.join(missing)}")
    for key, value in data.items():
        kind = STUDY_KEYS[key]
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            raise AnyshapeError(f"study file {path}: {key} is {value!r}, not {_KIND_WORDS.get(kind, 'a number')}")
    here = path.parent.absolute()

    def local(value: str) -> Path:
        p = Path(value).expanduser()
        return (p if p.is_absolute() else here / p).resolve()

    options = {k: data[k] for k in ("latency_budget_ms", "memory_budget_mb", "memory_objective", "seed", "sampler")
               if data.get(k) is not None}
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    command = first[1:].strip() if first.startswith("#") and "anyshape" in first else None
    common = dict(study=data.get("study") or path.stem, trials=data["trials"], device=data["device"], runtime=data["runtime"],
                  storage=storage or data.get("storage"), workers=workers or data.get("workers") or 1,
                  studies_dir=str(here), **options)
    if custom:
        from nas.search.run import SearchConfig
        from nas.workload import Workload

        config = SearchConfig(factory=data["factory"], factory_args=dict(data.get("factory_args") or {}),
                              workload=Workload.parse(data.get("workload") or "prefill:b1:s128"), **common)
        return StudyFile(path=path, command=command, config=config)
    model = data.get("model")
    if model is not None and model.startswith((".", "/", "~")):  # a path; an alias or hub id stays as written
        model = str(local(model))
    config = supernet_search_config(
        supernet=local(data["supernet"]), model=model, tables=local(data["tables"]) if data.get("tables") else Path("latency_tables"),
        table=data.get("table"), calibration=data.get("calibration", True), metric=data.get("metric") or "default",
        metric_base=here, workload=data.get("workload") or "prefill:b1:s128", **common,
    )
    if not (Path(config.factory_args["supernet"]) / "supernet.json").is_file():
        raise AnyshapeError(f"study file {path}: supernet {data['supernet']!r} is no supernet directory "
                            f"(no {Path(config.factory_args['supernet']) / 'supernet.json'})")
    return StudyFile(path=path, command=command, config=config)


# ---- batch -----------------------------------------------------------------------------------
@dataclass
class BatchRow:
    """One study file's outcome in a batch."""

    file: str
    study: str
    device: str
    runtime: str
    workload: str
    budget_ms: float | None
    trials: int
    new_trials: int = 0
    pareto: int = 0
    best_accuracy: float | None = None
    best_latency_ms: float | None = None
    seconds: float = 0.0
    error: str | None = None


def _run_one(item: tuple[str, Any]) -> BatchRow:
    """Worker-process body: one study file's search to completion (a failure is its row's error)."""
    from nas.search.run import run_search

    file, config = item
    row = BatchRow(file=file, study=config.study, device=config.device, runtime=config.runtime, workload=config.workload.name,
                   budget_ms=config.latency_budget_ms, trials=config.trials)
    start = time.perf_counter()
    try:
        result = run_search(config, progress=False)
    except AnyshapeError as e:
        row.error = str(e)
    except Exception as e:  # a bug in one study must not lose the others' results
        row.error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    else:
        row.new_trials = result.new_trials
        row.pareto = len(result.pareto)
        if result.pareto:  # fastest first: the last is the most accurate feasible shape
            best = result.pareto[-1]
            row.best_accuracy, row.best_latency_ms = float(best["values"][0]), float(best["values"][1])
    row.seconds = round(time.perf_counter() - start, 1)
    return row


def run_batch(files: Sequence[str | Path], *, workers: int = 1, storage: str | None = None, progress: bool = True) -> list[BatchRow]:
    """Run every study file's search on ``workers`` processes; rows in the files' order.

    All files are read and checked first (a bad file fails the batch before any search starts);
    each search runs one worker's share (``workers`` in a file are for ``search --config``).
    """
    from nas._progress import bar

    if not 1 <= workers <= 256:
        raise AnyshapeError(f"--workers is {workers}; allowed range 1..256")
    if not files:
        raise AnyshapeError("give at least one study file")
    loaded = [load_study_file(f, storage=storage, workers=1) for f in files]
    seen: dict[tuple[str, str], str] = {}
    for s in loaded:
        key = (s.config.storage_url, s.config.study)
        if key in seen:
            raise AnyshapeError(f"study files {seen[key]} and {s.path} name the same study {s.config.study!r} in one storage")
        seen[key] = str(s.path)
    items = [(str(s.path), s.config) for s in loaded]
    rows: dict[str, BatchRow] = {}
    done = bar(len(items), "batch", "study", enabled=progress)
    try:
        if workers == 1:
            for item in items:
                rows[item[0]] = _run_one(item)
                done.update(1)
        else:
            with multiprocessing.get_context("spawn").Pool(min(workers, len(items))) as pool:
                for row in pool.imap_unordered(_run_one, items):
                    rows[row.file] = row
                    done.update(1)
    finally:
        done.close()
    return [rows[file] for file, _ in items]


def batch_table(rows: Sequence[BatchRow]) -> str:
    """The summary table a batch prints: one line per study file."""
    head = ["study", "device", "runtime", "workload", "budget ms", "trials (new)", "Pareto", "best accuracy", "its ms", "wall s", "status"]
    body = []
    for r in rows:
        body.append([r.study, r.device, r.runtime, r.workload, "-" if r.budget_ms is None else f"{r.budget_ms:g}",
                     f"{r.trials} ({r.new_trials})", str(r.pareto), "-" if r.best_accuracy is None else f"{r.best_accuracy:.4f}",
                     "-" if r.best_latency_ms is None else f"{r.best_latency_ms:.2f}", f"{r.seconds:.1f}",
                     "ok" if r.error is None else f"error: {r.error}"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
