"""Content hashes of inputs and files, torch-free: a file's bytes, a folder's files (names and bytes), a video's
frames as they are stored (a video file, or a folder of frame images).

Here, and not with training, so that a process that only reads footage (a Ray worker of ``adapt --engine ray``)
hashes it without importing torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from bufferanytime.io.video import IMAGE_EXTENSIONS, natural_key


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


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a folder, in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def content_signature(path: Path) -> str:
    """SHA-256 of a video file's bytes, or of a frame folder's frame files (names and bytes).

    Unlike sizes and modification times, it changes whenever the frames do, even when copies keep the old times
    (``cp -p``, ``rsync -a``).
    """
    if path.is_dir():
        return files_sha256(path, frame_files(path))
    return file_sha256(path)
