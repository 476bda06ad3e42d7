"""Documents from files and folders, and the `english` corpus build from (fake) pinned packages."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas.errors import AnyshapeError
from nas.supernet import corpora
from nas.supernet.corpora import Source, build_corpus, chapter, clean_gcide, pack
from nas.supernet.data import Document, documents_sha256, load_corpus, load_documents

PROSE = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods. " * 4


# --------------------------------------------------------------------------- load_documents
def test_text_jsonl_and_compressed_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond one\n\n\nthird")
    assert [d.text for d in load_documents(tmp_path / "a.txt")] == ["first paragraph\nstill first", "second one", "third"]
    lines = [json.dumps({"source": "s", "text": "one"}), "", json.dumps({"text": " two "})]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.jsonl.xz").write_bytes(lzma.compress(("\n".join(lines) + "\n").encode()))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    expected = [Document("s", "one"), Document("b.jsonl:3", "two")]
    assert load_documents(tmp_path / "b.jsonl") == expected
    assert [d.text for d in load_documents(tmp_path / "c.jsonl.xz")] == ["one", "two"]
    assert [d.text for d in load_documents(tmp_path / "d.jsonl.gz")] == ["one", "two"]


def test_directory_is_read_recursively_sorted_without_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.md").write_text("zed one\n\nzed two")
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "m.jsonl").write_text(json.dumps({"text": "mid"}) + "\n")
    (tmp_path / ".hidden.txt").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("git")
    (tmp_path / "skip.bin").write_bytes(b"\x00\xff")
    docs = load_documents(tmp_path)
    assert [d.text for d in docs] == ["alpha", "mid", "zed one", "zed two"]
    assert docs[0].source == "a.txt:0" and docs[2].source == "sub/z.md:0"
    digest = documents_sha256(tmp_path)
    assert len(digest) == 64 and digest == documents_sha256(tmp_path)
    (tmp_path / "a.txt").write_text("alpha changed")
    assert documents_sha256(tmp_path) != digest
    assert documents_sha256(tmp_path / "a.txt") == hashlib.sha256(b"alpha changed").hexdigest()


def test_bad_inputs_say_what_and_where_in_one_line(tmp_path: Path) -> None:
    def error(path: Path, option: str = "--calib-text") -> str:
        with pytest.raises(AnyshapeError) as e:
            load_documents(path, option=option)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "--data path" in error(tmp_path / "missing.txt", "--data") and "does not exist" in error(tmp_path / "missing.txt")
    (tmp_path / "one.txt").write_text("only one paragraph")
    message = error(tmp_path / "one.txt", "--data")
    assert "need at least 2" in message and "--calib-text" not in message and "--data" in message
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    assert f"{tmp_path / 'bad.jsonl'}:2 is not valid JSON" in error(tmp_path / "bad.jsonl")
    (tmp_path / "notext.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert 'notext.jsonl:1 must be a JSON object with a "text" string' in error(tmp_path / "notext.jsonl")
    (tmp_path / "src.jsonl").write_text(json.dumps({"text": "x", "source": 3}) + "\n")
    assert 'src.jsonl:1 has a "source" that is not a string' in error(tmp_path / "src.jsonl")
    (tmp_path / "broken.jsonl.xz").write_bytes(b"not xz")
    assert "cannot read --calib-text file" in error(tmp_path / "broken.jsonl.xz")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n\nbar")
    assert "as UTF-8 text" in error(tmp_path / "latin.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"")
    assert "--data directory" in error(tmp_path / "empty", "--data") and "has no *.txt" in error(tmp_path / "empty")


def test_calibration_config_corpus_field() -> None:
    from nas.supernet.calibration import CalibrationConfig

    assert CalibrationConfig().corpus == "stdlib-docs" and CalibrationConfig().corpus_name == "stdlib-docs"
    assert CalibrationConfig(corpus="english").corpus_name == "english"
    old = {"calib_text": None, "calib_dataset": None, "num_calib": 4, "num_heldout": 4, "seq_len": 16, "batch_size": 2, "seed": 0}
    assert CalibrationConfig(**old).corpus == "stdlib-docs"  # records written before the field load
    with pytest.raises(AnyshapeError, match="calibration corpus is 'klingon'; known: stdlib-docs, english"):
        CalibrationConfig(corpus="klingon")
    with pytest.raises(AnyshapeError, match="not both"):
        CalibrationConfig(corpus="english", calib_text="x.txt")


# --------------------------------------------------------------------------- text helpers
def test_pack_and_chapter_respect_the_document_bounds() -> None:
    pieces = [f"entry {i} " + "word " * (i % 40) for i in range(400)]
    docs = pack(pieces, sep="\n")
    assert docs and all(200 <= len(d) <= 4000 for d in docs)
    assert "\n".join(docs).count("entry ") == 400  # nothing lost: the tail was merged
    long = [PROSE * 30]  # one 10k-character paragraph
    parts = chapter(long)
    assert len(parts) == 3 and all(len(p) <= 4000 for p in parts) and min(len(p) for p in parts) > 2500
    assert chapter(["short " * 50, "also short " * 20]) == ["short " * 49 + "short\n\n" + ("also short " * 20).strip()]
    assert pack(["tiny"]) == []


def test_clean_gcide_drops_headwords_pronunciation_etymology_and_tags() -> None:
    entry = ('Abdomen \\Ab*do"men\\, n. [L. abdomen (a word of uncertain\n   etymol.): cf. F. abdomen.]\n'
             "   1. (Anat.) The belly, or {cavity} of the [ae]ther [=o]pen. [Obs.]\n   [1913 Webster]")
    assert clean_gcide(entry) == "1. (Anat.) The belly, or cavity of the aether open."
    assert clean_gcide('Make \\Make\\ (m[=a]k), v. i.\n   To act. --Shak.\n   [1913 Webster]') == "To act. --Shak."


# --------------------------------------------------------------------------- building
def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        out.append(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        out.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def _fake_packages(folder: Path) -> None:
    (folder / "deb").mkdir(parents=True)
    (folder / "pypi").mkdir()
    story = "\n\n".join(f"Paragraph {i}. {PROSE}" for i in range(12))
    data = _tar({"./usr/share/doc/fake-story/story.txt": story.encode(), "./usr/share/doc/fake-story/other": b"x"}, "w:xz")
    deb = _ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar({"./control": b"Package: fake-story\n"}, "w:xz"),
               "data.tar.xz": data})
    (folder / "deb" / "fake-story_1%3a1.0-1_all.deb").write_bytes(deb)
    poems = "\n\n".join(f"Poem {i}\n" + "A line of verse that scans.\n" * 10 for i in range(6))
    (folder / "pypi" / "fakepoems-0.2.tar.gz").write_bytes(
        _tar({"fakepoems-0.2/texts/poems.txt": poems.encode(), "fakepoems-0.2/setup.py": b""}, "w:gz"))


def _paragraph_extractor(name: str, pattern: str) -> corpora.Extractor:
    def extract(members: corpora.Members) -> Iterator[Document]:
        for path, data in sorted(members.items()):
            assert Path(path).match(pattern)
            for i, text in enumerate(chapter(data.decode().split("\n\n"))):
                yield Document(f"{name}:{i}", text)

    return extract


TINY = (
    Source("story", "debian", "fake-story", "1:1.0-1", ("usr/share/doc/fake-story/story.txt",), "public domain (test)",
           _paragraph_extractor("story", "*story.txt")),
    Source("poems", "pypi", "fakepoems", "0.2", ("texts/*.txt",), "MIT (test)", _paragraph_extractor("poems", "*.txt"),
           kind="sdist"),
)


def test_build_from_fake_packages_is_deterministic_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSHAPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.SOURCES, "english", TINY)
    _fake_packages(tmp_path / "packages")
    with pytest.raises(AnyshapeError, match=r"corpus 'english' is not built .*`anyshape corpus build english`"):
        load_corpus("english")

    first = build_corpus("english", packages_dir=tmp_path / "packages")
    assert first.path == tmp_path / "cache" / "corpora" / "english" / "english.jsonl.xz"
    first_bytes = first.path.read_bytes()
    again = build_corpus("english", packages_dir=tmp_path / "packages", out=tmp_path / "other")
    assert again.path.read_bytes() == first_bytes  # same packages, same bytes
    assert again.manifest["file_sha256"] == first.manifest["file_sha256"] == hashlib.sha256(first_bytes).hexdigest()

    manifest = json.loads((first.path.parent / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["corpus"] == "english" and "built" in manifest
    assert [s["name"] for s in manifest["sources"]] == ["poems", "story"]  # sorted by source
    story = manifest["sources"][1]
    assert story["package"] == "fake-story" and story["version"] == "1:1.0-1" and story["registry"] == "debian"
    assert story["licence"] == "public domain (test)" and story["package_file"] == "fake-story_1%3a1.0-1_all.deb"
    docs = load_corpus("english")
    assert [d.source.split(":")[0] for d in docs] == sorted(d.source.split(":")[0] for d in docs)
    assert manifest["documents"] == len(docs) == sum(s["documents"] for s in manifest["sources"])
    assert manifest["characters"] == sum(len(d.text) for d in docs)
    assert all(200 <= len(d.text) <= 4000 for d in docs)
    payload = lzma.decompress(first_bytes)
    assert hashlib.sha256(payload).hexdigest() == manifest["sha256"]
    story_part = b"".join(line + b"\n" for line in payload.splitlines() if line.startswith(b'{"source": "story'))
    assert hashlib.sha256(story_part).hexdigest() == story["sha256"]

    listed = {row["name"]: row for row in corpora.list_corpora()}
    assert listed["english"]["built"] and listed["english"]["documents"] == len(docs)
    assert listed["stdlib-docs"]["kind"] == "shipped"


def test_missing_package_without_apt_get_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSHAPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.SOURCES, "english", TINY[:1])
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(AnyshapeError, match=r"apt-get is not available to download Debian package fake-story=1:1.0-1; put its .deb"):
        build_corpus("english", packages_dir=tmp_path)
    with pytest.raises(AnyshapeError, match="unknown buildable corpus 'nope'"):
        build_corpus("nope")


def test_bad_package_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYSHAPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.SOURCES, "english", TINY[:1])
    (tmp_path / "fake-story_1%3a1.0-1_all.deb").write_bytes(b"garbage")
    with pytest.raises(AnyshapeError, match="is not a Debian package"):
        build_corpus("english", packages_dir=tmp_path)


def test_cli_corpus_list_and_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    monkeypatch.setenv("ANYSHAPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(corpora.SOURCES, "english", TINY)
    _fake_packages(tmp_path / "packages")
    assert main(["corpus", "list"]) == 0
    assert "english: not built (run `anyshape corpus build english`)" in capsys.readouterr().out
    assert main(["corpus", "build", "english", "--packages", str(tmp_path / "packages"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["corpus"] == "english" and Path(out["path"]).is_file()
    assert main(["corpus", "list"]) == 0
    assert "english: built" in capsys.readouterr().out
