"""Atomic writes and locks: every artifact ssah writes appears whole or not at all.

A file is written to a temp file beside it and renamed into place; a directory is built under
a temp name and published with one rename (the first finished build wins). `cache_lock`
serialises "check the cache, else compute and write it" across processes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")  # the Hydra configs ssah ships


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Temp file + rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temp path beside `path` to write with any library; renamed into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish_dir(tmp: Path, final: Path) -> Path:
    """Rename a finished build dir into place; a concurrent build that finished first wins."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if not final.exists():
            raise
    return final


@contextmanager
def cache_lock(path: str | Path) -> Iterator[None]:
    """Exclusive lock on `<path>.lock` (POSIX flock): concurrent jobs compute a cache entry once.

    Wrap "check the cache, else compute and write it" in it; the second job then finds the file.
    """
    import fcntl

    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_sizes(root: str | Path) -> dict[str, int]:
    """Every file under `root` (its DONE marker aside) and its size: what a finished cached
    artifact should still hold (a content key says what was built, not that it is whole)."""
    root = Path(root)
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "DONE"
    }


def damage(root: str | Path) -> str | None:
    """Why the finished artifact in `root` is not whole (a file missing or of another size
    than its DONE marker recorded), or None; a DONE without sizes (older builds) is trusted."""
    root = Path(root)
    try:
        recorded = json.loads((root / "DONE").read_text()).get("file_sizes")
    except (OSError, ValueError, AttributeError):
        return None
    for rel, size in (recorded if isinstance(recorded, dict) else {}).items():
        p = root / rel
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != size:
            return f"{p} has {p.stat().st_size} bytes, its build wrote {size}"
    return None
