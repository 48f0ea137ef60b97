"""A disk that fills up, for the writers of :mod:`bufferanytime.io.outputs` (``save_npy``, ``write_bytes``,
``write_image``): install with ``FullDisk(files=N).install(monkeypatch)``.

The first ``files`` files opened for writing are written whole; the next one gets half of its first write, then
every write raises ``OSError(ENOSPC)`` without a path, as the system's ``write`` does on a full disk.
"""

from __future__ import annotations

import builtins
import errno


class FullDisk:
    def __init__(self, files: int = 0):
        self.files = files
        self.full = False
        self.failed: list[str] = []  # the paths whose write failed

    def install(self, monkeypatch) -> FullDisk:
        import bufferanytime.io.outputs as outputs

        monkeypatch.setattr(outputs, "open", self.open, raising=False)
        return self

    def open(self, path, mode: str = "r", *args, **kwargs):
        file = builtins.open(path, mode, *args, **kwargs)
        if not set(mode) & set("wax+"):
            return file
        if self.files:
            self.files -= 1
            return file
        return _Filling(file, self, str(path))


class _Filling:
    """A file on the full disk: half of the first write lands, then ENOSPC."""

    def __init__(self, file, disk: FullDisk, path: str):
        self.file, self.disk, self.path = file, disk, path

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if not self.disk.full:
            self.disk.full = True
            self.file.write(view[: len(view) // 2])
            self.file.flush()
        self.disk.failed.append(self.path)
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self) -> _Filling:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
