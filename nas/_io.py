"""Atomic file and directory writes (a failed write leaves nothing behind), and a folder lock."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.errors import AnyshapeError


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    _ensure_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) between processes; no lock file is left behind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_mapping_arg(text: str, option: str, example: str) -> Any:
    """A command-line value given as inline JSON or as a path to a JSON / YAML file."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise AnyshapeError(f"{option} is not valid JSON: {e.msg} at column {e.colno}") from None
    path = Path(text)
    if not path.is_file():
        raise AnyshapeError(f"{option} must be inline JSON like '{example}' or a file; {text!r} is neither")
    import yaml

    try:
        return yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise AnyshapeError(f"{option} file {path} is not valid JSON/YAML: {str(e).splitlines()[0]}") from None


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_dir(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail fast, before any expensive work, on an output directory that cannot be written."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise AnyshapeError(f"output path {out} exists and is not a directory")
    if out.exists() and not overwrite:
        raise AnyshapeError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AnyshapeError(f"cannot create directory {out.parent}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise AnyshapeError(f"directory {ancestor} is not writable; choose another output location")
    return out


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` when the block succeeds.

    On any error the temporary directory is removed and ``out`` is untouched. An existing
    ``out`` is an error unless ``overwrite`` (then it is replaced only after success).
    """
    out = check_output_dir(out, overwrite=overwrite)
    _ensure_parent(out)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    except OSError as e:
        raise AnyshapeError(f"cannot write to {out.parent}: {e.strerror}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ensure_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AnyshapeError(f"cannot create directory {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise AnyshapeError(f"directory {parent} is not writable; choose another output location")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """The per-user cache: ``$ANYSHAPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/anyshape``, else ``~/.cache/anyshape``."""
    if os.environ.get("ANYSHAPE_CACHE_DIR"):
        return Path(os.environ["ANYSHAPE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anyshape"
