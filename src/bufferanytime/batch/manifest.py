"""The run manifest of a batch: ``OUT/KIND_manifest.jsonl``, one JSON row per input, and the hashes it keys on.

A row says what became of an input (``status``: ``done``, ``failed`` with its one-line ``error``, or
``skipped`` when a previous run had done it), its content hash (``input_hash``), the hash of the model and the
settings (``settings_hash``), the output folder, timings, the worker, the attempts and the quality figures (see
:mod:`bufferanytime.batch.quality`). The file is rewritten whole under a temporary name and renamed into place
(:func:`bufferanytime.io.atomic.write_text_atomic`) as inputs finish, at most every :data:`FLUSH_S` seconds and
always at the end, on an interrupt too: a reader never sees half a row. Rows of inputs that are not part of the
current run are kept.

An input is skipped when its row says done (or skipped) with the same input and settings hashes and its output
folder still holds every file the row lists. Hashing reads the whole input once; a row also records the input's
size and modification time, and when both are unchanged the recorded hash is reused (as git's index does), so a
rerun over a large collection reads nothing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from bufferanytime import __version__
from bufferanytime.io.atomic import write_text_atomic

MANIFEST_NAME = "{kind}_manifest.jsonl"
FLUSH_S = 1.0  # the manifest is rewritten at most this often while inputs finish (and always at the end)
HASH_CHUNK = 1 << 20
DONE, FAILED, SKIPPED = "done", "failed", "skipped"


def manifest_path(out_root: Path, kind: str) -> Path:
    return out_root / MANIFEST_NAME.format(kind=kind)


def _files(path: Path) -> list[Path]:
    """The files whose bytes make an input: the file itself, or every file of a folder (sorted, recursively)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def input_stat(path: Path) -> list:
    """Size and modification time of an input's files: when unchanged, its content hash need not be read again."""
    stats = []
    for file in _files(path):
        st = file.stat()
        stats.append([str(file.relative_to(path)) if path.is_dir() else "", st.st_size, st.st_mtime_ns])
    return stats


def input_hash(path: Path) -> str:
    """BLAKE2b of an input's bytes (a folder: of each file's relative name and bytes, in name order)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in _files(path):
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def settings_hash(kind: str, model: dict, run_options: dict, settings: object) -> str:
    """A hash of everything that shapes the outputs: the task, the model (name, location, and the size and time
    of its files), the run options (per-frame, stride, frame limit), every inference setting and the version."""
    text = json.dumps({"kind": kind, "model": model, "run": run_options, "settings": asdict(settings),
                       "version": __version__}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def model_identity(location: str) -> dict:
    """What identifies a model's weights without reading them: its location and its files' sizes and times."""
    path = Path(location)
    if not path.exists():
        return {"location": location}
    return {"location": str(path.resolve()), "files": input_stat(path)}


class RunManifest:
    """The rows of ``OUT/KIND_manifest.jsonl``, keyed by input path; :meth:`flush` writes them atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        self._last_flush = 0.0
        self._dirty = False
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = _row(line)
                if row is not None:
                    self.rows[row["input"]] = row

    def previous(self, key: str) -> dict | None:
        return self.rows.get(key)

    def record(self, row: dict) -> None:
        """Set an input's row, and write the file when the last write is :data:`FLUSH_S` old."""
        row["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.rows[row["input"]] = row
        self._dirty = True
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write every row (a new file, renamed over the old one), if any changed since the last write."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in self.rows.values())
        write_text_atomic(self.path, text)
        self._last_flush, self._dirty = time.monotonic(), False


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("input"), str) else None


def is_complete(row: dict | None, input_digest: str, settings_digest: str) -> bool:
    """Whether ``row`` records these input and settings hashes as done and its output files are all there."""
    if row is None or row.get("status") not in (DONE, SKIPPED):
        return False
    if row.get("input_hash") != input_digest or row.get("settings_hash") != settings_digest:
        return False
    folder = Path(row.get("output") or "")
    written = row.get("written") or []
    return bool(written) and all(os.path.exists(folder / name) for name in written)
