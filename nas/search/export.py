"""Export a study's feasible Pareto front as ready-to-extract subnet configs, a CSV and a plot.

    studies/NAME/
        pareto.csv                one row per exported config
        pareto-00-t17.yaml ...    anyshape/subnet-v1 configs, fastest first
        pareto.png, pareto.html   the front beside the uniform baselines
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._io import write_text_atomic
from nas.config import BaseModelRef, SubnetConfig, SupernetRef
from nas.errors import AnyshapeError
from nas.search.problem import shape_key
from nas.shape import Shape


@dataclass
class ExportResult:
    out: Path
    configs: list[Path]
    csv: Path
    plots: list[Path]


def pareto_trials(study: Any) -> list[Any]:
    """Feasible, non-dominated complete trials (Optuna's ``best_trials``), one per shape, fastest first."""
    unique: dict[str, Any] = {}
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        unique.setdefault(shape_key(trial.user_attrs.get("shape", {"trial": trial.number})), trial)
    return sorted(unique.values(), key=lambda t: (t.values[1], t.number))


def load_storage(storage: str) -> Any:
    """The Optuna storage of an existing study database (a SQLite file that is not there is an error)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nas.search.run import make_storage, sqlite_file

    try:
        parsed = make_url(storage)
    except ArgumentError:
        raise AnyshapeError(f"--storage {storage!r} is not a database URL (like sqlite:///path.db or postgresql://host/db)") from None
    path = sqlite_file(parsed)
    if path and not Path(path).is_file():
        raise AnyshapeError(f"no study storage at {path}; run anyshape search first or pass --storage")
    return make_storage(storage, heartbeat=False)


def load_study(storage: str, name: str) -> Any:
    import optuna

    store = load_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise AnyshapeError(f"no study {name!r} in {storage}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=store)


def export_study(storage: str, name: str, out: str | Path, *, plot: bool = True) -> ExportResult:
    """Write one subnet config per feasible Pareto trial, ``pareto.csv`` and the plots."""
    study = load_study(storage, name)
    out = Path(out)
    trials = pareto_trials(study)
    complete = [t for t in study.trials if t.values is not None]
    if not trials:
        raise AnyshapeError(
            f"study {name!r} has no feasible trial on its Pareto front ({len(complete)} complete trials); "
            "no shape met the budgets: raise --latency-budget-ms / --memory-budget-mb or run more trials"
        )
    attrs = study.user_attrs
    metric = attrs.get("accuracy_metric", "accuracy")
    configs = []
    rows = []
    for i, trial in enumerate(trials):
        config = subnet_config(attrs, trial, metric)
        path = config.save(out / f"pareto-{i:02d}-t{trial.number}.yaml")
        configs.append(path)
        shape = trial.user_attrs["shape"]
        rows.append(
            {
                "config": path.name,
                "trial": trial.number,
                metric: trial.values[0],
                "latency_ms": trial.values[1],
                "memory_mb": trial.user_attrs.get("memory_mb"),
                "depth": len(shape["layers"]),
                "layers": " ".join(map(str, shape["layers"])),
                "heads": shape.get("heads"),
                "kv_heads": shape.get("kv_heads"),
                "ffn": shape.get("ffn"),
                "latency_source": trial.user_attrs.get("latency_source"),
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text_atomic(out / "pareto.csv", buffer.getvalue())
    plots = write_plots(study, trials, out, metric) if plot else []
    return ExportResult(out=out, configs=configs, csv=csv_path, plots=plots)


def _table_of(study_attrs: dict[str, Any]) -> dict[str, str]:
    """The latency table the prediction came from (its label, and its root folder when the search named one)."""
    out = {}
    if study_attrs.get("latency_table"):
        out["table"] = str(study_attrs["latency_table"])
    root = (study_attrs.get("search_config", {}).get("factory_args") or {}).get("tables")
    if root:
        out["tables_root"] = str(root)
    return out


def _calibration_of(study_attrs: dict[str, Any]) -> dict[str, Any]:
    """Whether the prediction was calibrated to the searching machine (``anyshape calibrate``), and by which record."""
    calibration = study_attrs.get("latency_calibration")
    if not calibration:
        return {"calibrated": False}
    return {"calibrated": True, "calibration": calibration.get("id"), "calibration_created": calibration.get("created")}


def subnet_config(study_attrs: dict[str, Any], trial: Any, metric: str) -> SubnetConfig:
    base = study_attrs.get("base_model") or {}
    if not base.get("source"):
        raise AnyshapeError("this study records no base model (study attribute base_model); was it made by anyshape search?")
    supernet = study_attrs.get("supernet")
    ua = trial.user_attrs
    search = study_attrs.get("search_config", {})
    key = f"{search.get('device')}/{search.get('runtime')}/{search.get('workload')}"
    objectives = {
        "accuracy": {"metric": metric, "value": trial.values[0], "direction": study_attrs.get("accuracy_direction")},
        "latency": {key: {"predicted_ms": ua.get("predicted_latency_ms"), "source": ua.get("latency_source"), **_table_of(study_attrs),
                          **_calibration_of(study_attrs)}},
        "memory_mb": ua.get("memory_mb"),
        "study": {"name": study_attrs.get("search_config", {}).get("study"), "trial": trial.number},
    }
    return SubnetConfig(
        base_model=BaseModelRef(base["source"], base.get("sha256")),
        supernet=SupernetRef(supernet["path"], supernet.get("sha256")) if supernet else None,
        shape=Shape.from_dict(ua["shape"]),
        objectives=objectives,
    )


def write_plots(study: Any, front: list[Any], out: Path, metric: str) -> list[Path]:
    """The front, every other complete trial, and the uniform baselines: PNG and self-contained HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in study.trials if t.values is not None]
    source = study.user_attrs.get("latency_source", "?")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], s=10, c="#bbbbbb", label="trials")
    baselines = study.user_attrs.get("baselines") or []
    if baselines:
        ax.scatter([b["latency_ms"] for b in baselines], [b["accuracy"] for b in baselines], s=22, marker="x", c="#d62728", label="uniform baselines (drop-last depth x uniform width)")
    ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", c="#1f77b4", ms=5, label="Pareto front (exported)")
    ax.set_xlabel(f"predicted latency, ms ({source})")
    ax.set_ylabel(metric)
    ax.set_title(f"{study.study_name}: {len(front)} Pareto shapes of {len(complete)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "pareto.png"
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    tmp_png = out / ".pareto.png.tmp"
    fig.savefig(tmp_png, format="png")
    plt.close(fig)
    tmp_png.replace(png)
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.values[0]:.5g}</td><td>{t.values[1]:.4g}</td><td>{html.escape(str(t.user_attrs.get('shape')))}</td></tr>"
        for t in front
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(study.study_name)} Pareto front</title>"
        f"<body style='font-family:sans-serif'>{svg.getvalue()}"
        f"<table border=1 cellpadding=4><tr><th>trial</th><th>{html.escape(metric)}</th><th>latency ms</th><th>shape</th></tr>{rows}</table>"
        f"<p>Latency source: {html.escape(source)}.</p></body>"
    )
    page_path = write_text_atomic(out / "pareto.html", page)
    return [png, page_path]
