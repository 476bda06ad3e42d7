"""Harvest the offline default corpus from the Python standard library's documentation.

    .venv/bin/python scripts/harvest_stdlib_corpus.py --out nas/data/stdlib_docs.jsonl.xz

Documents are the docstrings of the standard library's modules, classes and functions
(read with :mod:`ast`, nothing is imported or executed) and the language-reference topics
shipped in ``pydoc_data.topics``. Test packages are skipped, exact duplicates and very short
texts are dropped, and documents are written sorted by their source name, so the output is
a pure function of the Python version's standard library. The text is Python documentation,
Copyright (c) Python Software Foundation, under the PSF License Agreement (see nas/data/README.md).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import lzma
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo"}
MIN_CHARS = 60


def docstrings(path: Path, root: Path) -> Iterator[tuple[str, str]]:
    module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    nodes: list[tuple[str, ast.AST]] = [(module, tree)]
    while nodes:
        name, node = nodes.pop(0)
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if doc:
            yield name, doc
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                nodes.append((f"{name}.{child.name}", child))


def harvest(max_chars: int) -> list[dict[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: dict[str, dict[str, str]] = {}
    for path in sorted(root.rglob("*.py")):
        if SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        for name, text in docstrings(path, root):
            if len(text) >= MIN_CHARS:
                docs.setdefault(hashlib.sha256(text.encode()).hexdigest(), {"source": f"docstring:{name}", "text": text})
    import pydoc_data.topics

    for topic, text in sorted(pydoc_data.topics.topics.items()):
        text = text.strip()
        if len(text) >= MIN_CHARS:
            docs.setdefault(hashlib.sha256(text.encode()).hexdigest(), {"source": f"topic:{topic}", "text": text})
    out = sorted(docs.values(), key=lambda d: d["source"])
    kept, total = [], 0
    for doc in out:
        if total + len(doc["text"]) > max_chars:
            break
        kept.append(doc)
        total += len(doc["text"])
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nas/data/stdlib_docs.jsonl.xz"))
    parser.add_argument("--max-chars", type=int, default=12_000_000)
    args = parser.parse_args()
    docs = harvest(args.max_chars)
    header = {"python": sys.version.split()[0], "documents": len(docs), "chars": sum(len(d["text"]) for d in docs)}
    payload = "\n".join(json.dumps(d, ensure_ascii=False, sort_keys=True) for d in docs) + "\n"
    data = lzma.compress(payload.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    args.out.write_bytes(data)
    print(json.dumps({**header, "bytes_xz": len(data), "sha256": hashlib.sha256(payload.encode()).hexdigest()}))


if __name__ == "__main__":
    main()
