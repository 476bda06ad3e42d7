"""docs/BENCHMARKS.md holds one current section per benchmark; ``--write-docs`` replaces its own."""

from __future__ import annotations

from pathlib import Path

from nas._io import write_text_atomic

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def replace_section(heading: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the section whose heading line starts with ``heading`` (up to the next ``## ``) by
    ``text``, or append it when there is none; nothing else in the file changes."""
    doc = path.read_text()
    line = next((x for x in doc.splitlines() if x.startswith(heading)), None)
    if line is None:
        write_text_atomic(path, doc.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    start = doc.index(line)
    end = doc.find("\n## ", start + len(line))
    write_text_atomic(path, doc[:start] + text.rstrip() + "\n" + ("" if end == -1 else "\n" + doc[end + 1 :]))
