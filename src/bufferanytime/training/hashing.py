"""Content hashes that key the training cache: a file's bytes, a folder's files (names and bytes)."""

from __future__ import annotations

from pathlib import Path

from bufferanytime.io.hashing import file_sha256, files_sha256

__all__ = ["file_sha256", "files_sha256", "tree_sha256"]


def tree_sha256(root: str | Path) -> str:
    """SHA-256 of every file under ``root`` (weights and configs of a model folder).

    Hidden files and folders (download metadata such as ``.cache/huggingface/``) are left out.
    """
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))]
    return files_sha256(root, sorted(files))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
