"""Atomic writes: a file or folder appears whole under its name, or not at all.

Everything is written under a hidden temporary sibling (``.NAME.tmp-PID``, on the same file system) and renamed
into place when complete, so a killed process leaves either the previous version or the new one, never half of
it; temporaries of a failed write are removed. One helper for every writer of the package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sibling(path: str | Path, tag: str = "tmp") -> Path:
    """The hidden sibling ``.NAME.TAG-PID`` of ``path``: unique to this process, on the same file system."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write a file (or create a folder) at; it replaces ``path`` when the ``with``
    ends without an exception, and is removed when it does not."""
    path = Path(path)
    tmp = sibling(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    replace_atomic(tmp, path)


def replace_atomic(source: str | Path, destination: str | Path) -> None:
    """Rename ``source`` (a file or a folder) to ``destination``, replacing what is there.

    A file replaces a file in one step (``os.replace``). With a folder on either side, what is there is first
    moved aside, then removed once the new one is in place: ``destination`` is missing only between two renames.
    """
    source, destination = Path(source), Path(destination)
    if not source.is_dir() and not destination.is_dir():
        os.replace(source, destination)
        return
    old = sibling(destination, "old")
    _remove(old)
    if destination.exists() or destination.is_symlink():
        destination.rename(old)
    source.rename(destination)
    _remove(old)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
