"""Calibration and held-out text: the offline default corpus, a text file, or a HF dataset.

The default corpus (``stdlib-docs``) ships with anyshape in ``nas/data/``: docstrings and
language-reference topics of the Python standard library (PSF license; see
``nas/data/README.md``), harvested once by ``scripts/harvest_stdlib_corpus.py`` so it is the
same on every machine and needs no network.

Documents are split into a calibration pool and a held-out pool by a keyed hash of their
text (:func:`split_documents`): the split does not depend on document order, the two pools
are disjoint, and the split seed is fixed (``SPLIT_SEED``) so that the reference decoder,
trained on the calibration pool only, never saw the held-out pool.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nas.errors import AnyshapeError

DEFAULT_CORPUS = "stdlib-docs"
CORPUS_FILE = Path(__file__).resolve().parent.parent / "data" / "stdlib_docs.jsonl.xz"
#: The seed of the calibration / held-out split of documents (fixed: see the module docstring).
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class Document:
    """One text with the name of where it came from."""

    source: str
    text: str


def load_corpus(name: str = DEFAULT_CORPUS) -> list[Document]:
    """The packaged offline corpus, in its stored (sorted) order."""
    if name != DEFAULT_CORPUS:
        raise AnyshapeError(f"unknown builtin corpus {name!r}; the builtin corpus is {DEFAULT_CORPUS!r}")
    try:
        payload = lzma.decompress(CORPUS_FILE.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError) as e:
        raise AnyshapeError(f"cannot read the builtin corpus {CORPUS_FILE}: {e}; reinstall anyshape") from None
    return [Document(**json.loads(line)) for line in payload.splitlines() if line]


def load_text_file(path: str | Path) -> list[Document]:
    """A plain-text file as documents: paragraphs separated by blank lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnyshapeError(f"--calib-text file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"cannot read --calib-text file {path} as UTF-8 text: {e}") from None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) < 2:
        raise AnyshapeError(f"--calib-text file {path} has {len(paragraphs)} paragraph(s); need at least 2 (blank-line separated)")
    return [Document(f"{path.name}:{i}", p) for i, p in enumerate(paragraphs)]


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


def texts_sha256(texts: Sequence[str]) -> str:
    """A hash that identifies a list of texts (recorded in the artifact)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    return h.hexdigest()
