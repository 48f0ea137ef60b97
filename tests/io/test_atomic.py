"""Atomic writes: the new content appears whole, or the old one stays; no temporary is left behind."""

import pytest

from bufferanytime.io.atomic import atomic_path, replace_atomic, write_bytes_atomic, write_text_atomic


def test_files_replace_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    target = tmp_path / "a.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_folders_replace_folders_and_files(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    source = tmp_path / "src"
    source.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder goes")
    replace_atomic(source, blocker)
    assert blocker.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]
