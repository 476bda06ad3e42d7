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
from nas.search.storage import is_feasible, load_study, pareto_trials
from nas.shape import Shape


@dataclass
class ExportResult:
    out: Path
    configs: list[Path]
    csv: Path
    plots: list[Path]


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
    plots = write_plots(study, trials, out, metric, {t.number: p.name for t, p in zip(trials, configs)}) if plot else []
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


@dataclass
class PlotData:
    """What both plots draw: every complete trial (feasible or not), the exported front, the budget, the baselines."""

    title: str
    metric: str
    source: str
    budget_ms: float | None
    feasible: list[Any]
    infeasible: list[Any]
    front: list[Any]
    configs: dict[int, str]  # trial number -> exported config file name
    baselines: list[dict[str, Any]]

    @classmethod
    def of(cls, study: Any, front: list[Any], metric: str, configs: dict[int, str]) -> PlotData:
        complete = [t for t in study.trials if t.values is not None]
        budget = (study.user_attrs.get("search_config") or {}).get("latency_budget_ms")
        return cls(title=f"{study.study_name}: {len(front)} Pareto shapes of {len(complete)} trials", metric=metric,
                   source=str(study.user_attrs.get("latency_source", "?")), budget_ms=budget,
                   feasible=[t for t in complete if is_feasible(t)], infeasible=[t for t in complete if not is_feasible(t)],
                   front=sorted(front, key=lambda t: t.values[1]), configs=configs,
                   baselines=list(study.user_attrs.get("baselines") or []))

    @property
    def latency_label(self) -> str:
        """The x axis: predictions, and what they come from (a measured table, a roofline estimate, ...)."""
        return f"predicted latency, ms (predictor fit on a {self.source} table)"

    def step(self) -> tuple[list[float], list[float]]:
        """The front as a step: a shape's accuracy holds from its latency until the next, slower shape's."""
        xs: list[float] = []
        ys: list[float] = []
        for t in self.front:
            if xs:
                xs.append(t.values[1])
                ys.append(ys[-1])
            xs.append(t.values[1])
            ys.append(t.values[0])
        return xs, ys


def write_plots(study: Any, front: list[Any], out: Path, metric: str, configs: dict[int, str] | None = None) -> list[Path]:
    """``pareto.png`` (matplotlib) and ``pareto.html`` (plotly, interactive: hover shows shape, latency, accuracy
    and config; without plotly a static page with the same plot and a table)."""
    data = PlotData.of(study, front, metric, configs or {})
    png = _write_png(data, out)
    try:
        import plotly.graph_objects  # noqa: F401
    except ModuleNotFoundError:
        return [png, _write_static_html(data, out)]
    return [png, _write_plotly_html(data, out)]


def _figure(data: PlotData) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    ax.scatter([t.values[1] for t in data.feasible], [t.values[0] for t in data.feasible], s=12, c="#9e9e9e", label="feasible trials")
    if data.infeasible:
        ax.scatter([t.values[1] for t in data.infeasible], [t.values[0] for t in data.infeasible], s=14, marker="x", c="#e6a1a1",
                   linewidths=0.8, label="infeasible trials (over a budget)")
    if data.baselines:
        ax.scatter([b["latency_ms"] for b in data.baselines], [b["accuracy"] for b in data.baselines], s=26, marker="D",
                   facecolors="none", edgecolors="#d62728", label="uniform baselines (drop-last depth x uniform width)")
    xs, ys = data.step()
    ax.plot(xs, ys, "-", c="#1f77b4", lw=1.6)
    ax.plot([t.values[1] for t in data.front], [t.values[0] for t in data.front], "o", c="#1f77b4", ms=5, label="Pareto front (exported)")
    if data.budget_ms is not None:
        ax.axvline(data.budget_ms, ls="--", c="#444444", lw=1, label=f"latency budget {data.budget_ms:g} ms")
    ax.set_xlabel(data.latency_label)
    ax.set_ylabel(data.metric)
    ax.set_title(data.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
    fig.tight_layout()
    return fig


def _write_png(data: PlotData, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(data)
    png = out / "pareto.png"
    tmp_png = out / ".pareto.png.tmp"
    fig.savefig(tmp_png, format="png")
    plt.close(fig)
    tmp_png.replace(png)
    return png


def _hover(t: Any, metric: str, config: str | None) -> str:
    shape = t.user_attrs.get("shape") or {}
    layers = shape.get("layers") or []
    text = (f"trial {t.number}<br>{html.escape(metric)} {t.values[0]:.5g}<br>latency {t.values[1]:.4g} ms<br>"
            f"depth {len(layers)} (layers {' '.join(map(str, layers))})<br>heads {shape.get('heads')} / kv {shape.get('kv_heads')}, "
            f"ffn {shape.get('ffn')}")
    if not is_feasible(t):
        named = {k: v for k, v in t.constraints.items() if not k.isdigit()} or t.constraints  # not the dashboard's mirror
        text += "<br>over budget: " + ", ".join(f"{k} +{v:.4g}" for k, v in named.items() if v > 0)
    return text + (f"<br>config {html.escape(config)}" if config else "")


def _write_plotly_html(data: PlotData, out: Path) -> Path:
    import plotly.graph_objects as go

    def points(trials: list[Any], **kwargs: Any) -> Any:
        return go.Scatter(x=[t.values[1] for t in trials], y=[t.values[0] for t in trials], mode="markers",
                          hovertext=[_hover(t, data.metric, data.configs.get(t.number)) for t in trials], hoverinfo="text", **kwargs)

    fig = go.Figure()
    fig.add_trace(points(data.feasible, name="feasible trials", marker={"color": "#9e9e9e", "size": 6}))
    if data.infeasible:
        fig.add_trace(points(data.infeasible, name="infeasible trials (over a budget)",
                             marker={"color": "#e6a1a1", "size": 7, "symbol": "x"}))
    if data.baselines:
        fig.add_trace(go.Scatter(x=[b["latency_ms"] for b in data.baselines], y=[b["accuracy"] for b in data.baselines], mode="markers",
                                 name="uniform baselines", marker={"symbol": "diamond-open", "size": 9, "color": "#d62728"},
                                 hovertext=[f"uniform baseline {b.get('fraction')}<br>{html.escape(data.metric)} {b['accuracy']:.5g}"
                                            f"<br>latency {b['latency_ms']:.4g} ms<br>{html.escape(str(b['shape']))}" for b in data.baselines],
                                 hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[t.values[1] for t in data.front], y=[t.values[0] for t in data.front], mode="lines+markers",
                             line={"shape": "hv", "color": "#1f77b4"}, marker={"size": 8}, name="Pareto front (exported)",
                             hovertext=[_hover(t, data.metric, data.configs.get(t.number)) for t in data.front], hoverinfo="text"))
    if data.budget_ms is not None:
        fig.add_vline(x=data.budget_ms, line_dash="dash", line_color="#444444",
                      annotation_text=f"budget {data.budget_ms:g} ms", annotation_position="top left")
    fig.update_layout(title=data.title, xaxis_title=data.latency_label, yaxis_title=data.metric,
                      template="plotly_white", hovermode="closest", legend={"orientation": "h", "y": -0.2})
    page = fig.to_html(include_plotlyjs=True, full_html=True)  # plotly.js inline: the page works offline
    return write_text_atomic(out / "pareto.html", page)


def _write_static_html(data: PlotData, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(data)
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    plt.close(fig)
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.values[0]:.5g}</td><td>{t.values[1]:.4g}</td><td>{html.escape(str(t.user_attrs.get('shape')))}</td>"
        f"<td>{html.escape(data.configs.get(t.number, ''))}</td></tr>"
        for t in data.front
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
        f"<body style='font-family:sans-serif'>{svg.getvalue()}"
        f"<table border=1 cellpadding=4><tr><th>trial</th><th>{html.escape(data.metric)}</th><th>latency ms</th><th>shape</th>"
        f"<th>config</th></tr>{rows}</table>"
        f"<p>Latency source: {html.escape(data.source)}. An interactive plot needs plotly: pip install 'anyshape[dashboard]'.</p></body>"
    )
    return write_text_atomic(out / "pareto.html", page)
