"""``anyshape export``: a study's feasible Pareto front as ready-to-extract configs."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json


@app.command("export")
def export_command(
    study: str = typer.Option(..., "--study", help="Study name."),
    storage: str | None = typer.Option(None, "--storage", help="Study storage URL (default: sqlite:///studies/STUDY/study.db)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the configs (default: studies/STUDY/)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write pareto.png and pareto.html."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write one subnet config per feasible Pareto trial, pareto.csv and a plot of the front."""
    from nas.search.export import export_study

    url = storage or f"sqlite:///{Path('studies').absolute() / study / 'study.db'}"
    result = export_study(url, study, out or Path("studies") / study, plot=plot)
    if as_json:
        print_json({"out": str(result.out), "configs": [str(p) for p in result.configs], "csv": str(result.csv), "plots": [str(p) for p in result.plots]})
        return
    typer.echo(f"exported {len(result.configs)} Pareto configs to {result.out} (pareto.csv{', pareto.png, pareto.html' if result.plots else ''})")
