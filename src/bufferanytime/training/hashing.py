"""Content hashes that key the training cache: a file's bytes, a folder's files (names and bytes)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def files_sha256(root: Path, files: Iterable[Path]) -> str:
    """SHA-256 over the paths (relative to ``root``) and bytes of ``files``, in the order given."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def tree_sha256(root: str | Path) -> str:
    """SHA-256 of every file under ``root`` (weights and configs of a model folder).

    Hidden files and folders (download metadata such as ``.cache/huggingface/``) are left out.
    """
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))]
    return files_sha256(root, sorted(files))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
