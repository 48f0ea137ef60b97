"""The inputs of a batch run: paths, ``.txt`` lists, quoted globs, and manifests with one column of paths.

A manifest is a ``.csv``, ``.jsonl`` or ``.parquet`` table; its paths are in the column named ``path`` (or
``paths``, ``uri``, ``video``, ``input``), or in its only column. Relative paths are taken relative to the
manifest, as those of a ``.txt`` list are. Reading a Parquet file needs pyarrow. Nothing here opens a video: a
bad input is found by its worker and fails in its own manifest row, not the whole run.
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

from bufferanytime.errors import InputError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
PATH_COLUMNS = ("path", "paths", "uri", "video", "input")
GLOB_CHARS = frozenset("*?[")


def collect_inputs(items: list[str]) -> list[Path]:
    """Every input path named by ``items`` (paths, lists, globs, manifests), in order; InputError for a glob that
    matches nothing or a list or manifest that cannot be used."""
    from bufferanytime.io.video import expand_inputs

    paths: list[Path] = []
    for item in items:
        if GLOB_CHARS & set(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputError(f"{item}: the pattern matches no file or folder")
            paths += [Path(match) for match in matches]
        elif Path(item).suffix.lower() in MANIFEST_SUFFIXES and Path(item).is_file():
            paths += read_manifest(Path(item))
        else:
            paths += expand_inputs([item])
    return paths


def read_manifest(path: Path) -> list[Path]:
    """The paths in a manifest's path column (see the module docstring); InputError when it has none."""
    suffix = path.suffix.lower()
    try:
        columns, rows = {".csv": _csv, ".jsonl": _jsonl, ".parquet": _parquet}[suffix](path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from exc
    column = _path_column(path, columns)
    values = [row.get(column) for row in rows]
    entries = [Path(str(v).strip()) for v in values if v is not None and str(v).strip()]
    if not entries:
        raise InputError(f"{path}: the manifest's column {column!r} names no input")
    return [entry if entry.is_absolute() else path.parent / entry for entry in entries]


def _path_column(path: Path, columns: list[str]) -> str:
    named = [c for c in columns if c.strip().lower() in PATH_COLUMNS]
    if named:
        return named[0]
    if len(columns) == 1:
        return columns[0]
    shown = ", ".join(repr(c) for c in columns[:8]) or "none"
    raise InputError(f"{path}: no path column in the manifest (columns: {shown}); name it one of "
                     f"{', '.join(PATH_COLUMNS)}, or give a single column")


def _csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _jsonl(path: Path) -> tuple[list[str], list[dict]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"line {number} is not a JSON object")
        rows.append(row)
    return list(dict.fromkeys(key for row in rows for key in row)), rows


def _parquet(path: Path) -> tuple[list[str], list[dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading a Parquet manifest needs pyarrow (pip install pyarrow), or give the "
                         "paths as .csv or .jsonl") from None
    table = pq.read_table(path)
    return list(table.column_names), table.to_pylist()
