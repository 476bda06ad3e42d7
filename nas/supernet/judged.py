"""Human-judged evaluation sets that ship inside a PyPI package, as task files (:mod:`nas.supernet.tasks`).

gensim's wheel carries, as test data, SimLex-999 and WordSim-353 (word pairs with mean human
similarity judgements) and 200 of Pang and Lee's movie-review polarity sentences. They are read
from the pinned wheel (found in a folder, the per-user package cache, an installed gensim, or
fetched with ``pip download``), converted once to ``pairs`` / ``labels`` files under
``<cache>/corpora/tasks/``, and named by their task specs (``pairs:PATH``), so the search's
``--metric``, the quickstart and the benchmarks score shapes on them the same way.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nas._io import write_text_atomic
from nas.errors import AnyshapeError
from nas.supernet.corpora import Source, download_package, find_package, read_members
from nas.supernet.data import Document, corpora_dir

DATA = "gensim/test/test_data/"


def _no_documents(members: dict[str, bytes]) -> Iterator[Document]:
    return iter(())


#: The pinned wheel the sets come from (the data files are the same in every platform's wheel).
GENSIM = Source(name="gensim-test-data", registry="pypi", package="gensim", version="4.3.3",
                paths=(f"{DATA}simlex999.txt", f"{DATA}wordsim353.tsv", f"{DATA}pang_lee_polarity.cor"),
                licence="gensim: LGPL-2.1; the sets: their authors' research distributions (see JudgedSet.reference)",
                extract=_no_documents, kind="wheel")


def _pairs(text: str) -> list[str]:
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            a, b, score = line.split("\t")[:3]
            rows.append(f"{a.strip()}\t{b.strip()}\t{float(score):g}")
    return rows


def _fasttext_labels(text: str) -> list[str]:
    rows = []
    for line in text.splitlines():
        label, _, sentence = line.strip().partition(" ")
        if label.startswith("__label__") and sentence.strip():
            rows.append(f"{label.removeprefix('__label__')}\t{sentence.strip()}")
    return rows


@dataclass(frozen=True)
class JudgedSet:
    """One human-judged set: where it is in the wheel, its task kind, and whom to cite."""

    name: str
    kind: str  # "pairs" | "labels"
    member: str
    convert: Callable[[str], list[str]]
    reference: str

    def path(self, root: Path) -> Path:
        return root / f"{self.name}.tsv"

    def spec(self, root: Path) -> str:
        return f"{self.kind}:{self.path(root)}"


JUDGED_SETS = (
    JudgedSet("simlex-999", "pairs", f"{DATA}simlex999.txt", _pairs,
              "Hill, Reichart and Korhonen 2015, SimLex-999 (word similarity, 0-10)"),
    JudgedSet("wordsim-353", "pairs", f"{DATA}wordsim353.tsv", _pairs,
              "Finkelstein et al. 2002, WordSimilarity-353 (relatedness, 0-10)"),
    JudgedSet("polarity-200", "labels", f"{DATA}pang_lee_polarity.cor", _fasttext_labels,
              "Pang and Lee 2005, sentence polarity v1.0 (200 sentences, pos / neg)"),
)


def tasks_dir() -> Path:
    return corpora_dir() / "tasks"


def judged_sets(packages: Iterable[Path] = (), *, fetch: bool = True, say: Callable[[str], None] = lambda message: None) -> dict[str, str]:
    """``{name: task spec}`` of every set in :data:`JUDGED_SETS`, converting them on first use.

    The wheel is looked for in ``packages``, the per-user package cache and an installed gensim;
    ``fetch`` downloads it (about 27 MB) when none is found.
    """
    root = tasks_dir()
    if not all(s.path(root).is_file() for s in JUDGED_SETS):
        members = _members(list(packages), fetch, say)
        for s in JUDGED_SETS:
            if s.member not in members:
                raise AnyshapeError(f"the {GENSIM.pin} package has no {s.member}; the human-judged sets cannot be made from it")
            rows = s.convert(members[s.member].decode("cp1252"))  # the polarity sentences are Windows-1252, the rest ASCII
            write_text_atomic(s.path(root), f"# {s.reference}; from {GENSIM.pin} {s.member}\n" + "\n".join(rows) + "\n")
    return {s.name: s.spec(root) for s in JUDGED_SETS}


def _members(packages: list[Path], fetch: bool, say: Callable[[str], None]) -> dict[str, bytes]:
    cache = corpora_dir() / "packages"
    wheel = find_package(GENSIM, [*packages, cache])
    if wheel is not None:
        return read_members(wheel, GENSIM)
    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.origin:
        site = Path(spec.origin).parent.parent
        files = {m: (site / m) for m in GENSIM.paths}
        if all(p.is_file() for p in files.values()):
            return {m: p.read_bytes() for m, p in files.items()}
    if not fetch:
        raise AnyshapeError(f"the human-judged sets come from the {GENSIM.pin} wheel, which is not in {cache}; "
                            f"run `pip download --no-deps {GENSIM.pin} -d {cache}`")
    say(f"human-judged sets: downloading the {GENSIM.pin} wheel (about 27 MB, once) into {cache}")
    return read_members(download_package(GENSIM, cache), GENSIM)
