"""Output writing in bounded memory, and atomically.

- :class:`OutputFiles` stages a run's files in a hidden folder beside their destination and moves each one into
  place only when all are complete: a failure never leaves a half-written result, and only the files the run
  wrote are replaced (whatever else is in the destination folder stays). Each staging folder holds a marker
  (:data:`STAGING_MARKER`: host, PID namespace, PID and process start); the next run in the same output folder
  removes the staging folders whose process is known to be gone (SIGKILL, power loss), and nothing else: a folder
  without the marker, or one of a live process on another host or in another PID namespace, stays.
- :class:`OutputDir` builds a whole result folder under a hidden temporary name and renames it into place (for
  commands whose output folder holds nothing else).
- :class:`NpyStreamWriter` appends frames to a raw file as they are produced, can re-read them one frame at a
  time (:class:`FrameFile`, for second passes that need global statistics, such as the visualisation range) or
  through a memory map, and packs them into an ``.npz`` by streaming (:func:`write_npz`, several arrays at once),
  so no output video is ever held in memory whole. :func:`strided_sample` takes an even sample of a video's values
  one frame at a time.
- Visualisation helpers (:func:`colorize_depth`, :func:`normals_to_rgb`, :func:`robust_range`) and
  :func:`write_image`; which one a buffer uses is its task's choice (:mod:`bufferanytime.tasks`).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io.atomic import replace_atomic, sibling, write_text_atomic

COPY_CHUNK_BYTES = 1 << 20  # packing the npz: a larger buffer is no faster and is held twice while copied
VIS_PERCENTILES = (1.0, 99.0)  # robust range of the depth visualisation, over the whole video
VIS_SAMPLE_PIXELS = 2_000_000  # pixels sampled (evenly over all frames) to estimate that range
# Hidden staging folders: ".<stem>.tmp-<pid>" (and ".<stem>.old-<pid>" of replace_atomic), atomic.sibling names.
STAGING_NAME = re.compile(r"^\..+\.(?:tmp|old)-(\d+)$")
META_SUFFIX = ".meta.json"  # moved into place last: its presence says the other files of the run are complete
# Written into each staging folder when it is created: only folders holding it are ever removed as stale.
STAGING_MARKER = ".bufferanytime-staging.json"
# A staging folder whose process cannot be checked (another host or PID namespace sharing the output folder) is
# stale only when nothing in it changed for this long: far longer than any run.
STALE_STAGING_AGE_S = 7 * 24 * 3600


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be created in it; raise InputError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{path}: output directory is not writable ({exc.strerror or exc})") from exc
    return path


def check_output_root(path: str | Path) -> Path:
    """Check, without creating anything, that ``path`` is or can become a writable directory."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the output directory ({existing} is not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output directory is not writable ({existing} is read-only)")
    return path


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, deepest first (to remove them again if unused)."""
    created = []
    missing = path
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    path.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_dirs(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty; never anything with content."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a zombie counts as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError) as exc:
        return isinstance(exc, PermissionError)
    return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>:<start time in clock ticks since boot>`` (``/proc/PID/stat``
    field 22): a PID reused by a later process, or after a reboot, gives another value. None without ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def pid_namespace() -> str:
    """The PID namespace of this process (``pid:[N]``; empty where unknown): PIDs mean nothing across them."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def staging_marker() -> dict:
    """What :data:`STAGING_MARKER` records about this process."""
    return {"host": socket.gethostname(), "pid_namespace": pid_namespace(), "pid": os.getpid(),
            "start": process_start(os.getpid()), "created": time.time()}


def write_staging_marker(folder: Path) -> None:
    """Mark ``folder`` as this process's staging folder (see :func:`remove_stale_staging`)."""
    write_text_atomic(folder / STAGING_MARKER, json.dumps(staging_marker()) + "\n")


def _read_marker(folder: Path, pid: int) -> dict | None:
    """The marker of a staging folder named for ``pid``; None when there is none (not ours) or it names another."""
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("pid") == pid else None


def _age_s(folder: Path) -> float:
    """Seconds since the folder or its marker last changed."""
    try:
        changed = max(folder.stat().st_mtime, (folder / STAGING_MARKER).stat().st_mtime)
    except OSError:
        return 0.0
    return time.time() - changed


def staging_is_stale(folder: Path, marker: dict) -> bool:
    """Whether the process that wrote ``marker`` is gone: on this host and PID namespace, when its PID is dead or
    now another process (another start time); elsewhere, where it cannot be checked, only after
    :data:`STALE_STAGING_AGE_S` without a change."""
    if marker.get("host") != socket.gethostname() or marker.get("pid_namespace") != pid_namespace():
        return _age_s(folder) > STALE_STAGING_AGE_S
    pid = int(marker["pid"])
    if not pid_alive(pid):
        return True
    recorded, current = marker.get("start"), process_start(pid)
    return recorded is not None and current is not None and recorded != current


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders in ``root`` whose process is gone (:func:`staging_is_stale`); returns them.

    Only folders named like a staging folder that hold this package's :data:`STAGING_MARKER` are candidates: a
    user's ``.name.tmp-123`` folder is never touched, nor is a live run's on another host sharing ``root``."""
    stale = []
    for entry in root.iterdir() if root.is_dir() else ():
        match = STAGING_NAME.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        marker = _read_marker(entry, int(match.group(1)))
        if marker is not None and staging_is_stale(entry, marker):
            shutil.rmtree(entry, ignore_errors=True)
            stale.append(entry)
    return stale


class OutputFiles:
    """Context manager: yields a staging folder; on success each file in it is moved to the same place in ``final``.

    Only the files staged replace their namesakes in ``final`` (subfolders likewise, file by file); nothing else
    in ``final`` is touched. Files named ``*.meta.json`` are moved last. On any exception, KeyboardInterrupt
    included, the staging folder is removed, and so are the folders this created if they stayed empty.
    ``written`` lists the top-level names moved into ``final``.
    """

    def __init__(self, final: str | Path):
        self.final = Path(final)
        self.staging = sibling(self.final)
        self.written: list[str] = []
        self._created: list[Path] = []

    def __enter__(self) -> Path:
        self._created = make_dirs(self.final.parent)
        remove_stale_staging(self.final.parent)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        try:
            write_staging_marker(self.staging)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            remove_empty_dirs(self._created)
            raise
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        except BaseException:
            exc_type = True
            raise
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            if exc_type is not None:
                remove_empty_dirs(self._created)

    def _staged_files(self) -> list[Path]:
        files = sorted(p.relative_to(self.staging) for p in self.staging.rglob("*") if p.is_file())
        files = [rel for rel in files if rel != Path(STAGING_MARKER)]
        return sorted(files, key=lambda rel: rel.name.endswith(META_SUFFIX))

    def _commit(self) -> None:
        files = self._staged_files()
        for rel in files:  # check every destination before moving anything: no half-moved result
            for parent in [self.final, *(self.final / part for part in rel.parents[0].parts)]:
                if parent.exists() and not parent.is_dir():
                    raise InputError(f"{parent}: exists and is not a directory; cannot write {rel} there")
            if (self.final / rel).is_dir():
                raise InputError(f"{self.final / rel}: is a directory; cannot replace it with a file")
        self._created = make_dirs(self.final) + self._created
        for rel in files:
            (self.final / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / rel, self.final / rel)
        self.written = list(dict.fromkeys(rel.parts[0] for rel in files))


class OutputDir:
    """Context manager for ``final``: yields a temporary sibling folder, renamed to ``final`` on success.

    On an exception the temporary folder is removed and ``final`` is left untouched.
    """

    def __init__(self, final: str | Path):
        self.final = Path(final)
        self.tmp = sibling(self.final)

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        replace_atomic(self.tmp, self.final)


class NpyStreamWriter:
    """Append same-shaped frames to a raw file; read back as a memmap or pack into an ``.npz``."""

    def __init__(self, raw_path: str | Path, dtype: np.dtype | type = np.float32):
        self.raw_path = Path(raw_path)
        self.dtype = np.dtype(dtype)
        self.frame_shape: tuple[int, ...] | None = None
        self.count = 0
        self._file = open(self.raw_path, "wb")  # noqa: SIM115 - closed in close()

    def append(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=self.dtype)
        if self.frame_shape is None:
            self.frame_shape = frame.shape
        elif frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} differs from {self.frame_shape}")
        self._file.write(frame.tobytes())
        self.count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.count, *(self.frame_shape or ()))

    def read(self) -> np.ndarray:
        """The frames written so far, as a read-only memory map ``(T, *frame_shape)``."""
        if not self._file.closed:
            self._file.flush()
        return np.memmap(self.raw_path, dtype=self.dtype, mode="r", shape=self.shape)

    def frames(self) -> FrameFile:
        """The frames written so far, read one at a time with plain file reads (see :class:`FrameFile`)."""
        if not self._file.closed:
            self._file.flush()
        return FrameFile(self.raw_path, self.dtype, self.shape)

    def write_npz(self, npz_path: str | Path, key: str) -> None:
        """Pack the frames into ``npz_path`` as array ``key`` (uncompressed, like ``np.savez``)."""
        write_npz(npz_path, {key: self})


class FrameFile(Sequence):
    """The frames of a raw file ``(T, *frame_shape)``, each read into a new array when asked for.

    A pass over a memory map keeps every page it touched in the process's resident memory until the map is
    closed, so a second pass over a long video grew with the video; a plain read holds one frame at a time.
    """

    def __init__(self, path: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), tuple(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} of {len(self)}")
        with open(self.path, "rb") as file:
            file.seek((index % len(self)) * self._frame_bytes)
            return self._read_frame(file)

    def __iter__(self) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as file:
            for _ in range(len(self)):
                yield self._read_frame(file)

    @property
    def _frame_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def _read_frame(self, file) -> np.ndarray:
        frame = np.empty(self.shape[1:], self.dtype)
        if file.readinto(memoryview(frame).cast("B")) != frame.nbytes:
            raise OSError(f"{self.path} ends before the {len(self)} frames of its shape {self.shape}")
        return frame


def strided_sample(frames: Sequence[np.ndarray], max_values: int) -> np.ndarray:
    """Every ``step``-th value of ``frames`` flattened, ``step`` chosen to keep at most ``max_values`` values: the
    same values as ``np.asarray(frames).reshape(-1)[::step]``, gathered one frame at a time."""
    if isinstance(frames, np.ndarray) and not isinstance(frames, np.memmap):
        return frames.reshape(-1)[::max(1, int(np.ceil(frames.size / max_values)))]
    per_frame = int(np.prod(frames[0].shape)) if len(frames) else 0
    step = max(1, int(np.ceil(len(frames) * per_frame / max_values)))
    # a copy, not a view: a view would keep each whole frame alive
    parts = [np.asarray(frame).reshape(-1)[(-t * per_frame) % step::step].copy() for t, frame in enumerate(frames)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def write_npz(npz_path: str | Path, arrays: dict[str, NpyStreamWriter]) -> None:
    """Stream the frames of several writers into one uncompressed ``.npz`` (what ``np.savez`` writes)."""
    with zipfile.ZipFile(npz_path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, writer in arrays.items():
            writer.close()
            header = {"descr": np.lib.format.dtype_to_descr(writer.dtype), "fortran_order": False,
                      "shape": writer.shape}
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member, open(writer.raw_path, "rb") as raw:
                np.lib.format.write_array_header_2_0(member, header)
                shutil.copyfileobj(raw, member, COPY_CHUNK_BYTES)


class _Writes:
    """Unbuffered writes to an open raw file, where a failure raises an OSError with the system's reason (a full
    disk: ENOSPC) and the path. Given to ``np.save``, it makes numpy write through it: on a real file numpy writes
    with C ``fwrite``, and a short write raises ``OSError("N requested and M written")``, with no errno, no path."""

    def __init__(self, file, path: Path):
        self.file, self.path = file, path

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:  # a raw write may take part of the data; the next one then says why
                view = view[self.file.write(view):]
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:
                raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None
            raise
        return len(data)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:  # the file being written, for code handed this in place of its path
        return str(self.path)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save(path, array)`` (``path`` as given, no ``.npy`` added), where a failed write (a full disk, a quota)
    raises an OSError with its errno and the path."""
    path = Path(path)
    with open(path, "wb", buffering=0) as file:
        np.save(_Writes(file, path), array)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path``; a failure raises an OSError with its errno and the path."""
    path = Path(path)
    with open(path, "wb", buffering=0) as file:
        _Writes(file, path).write(data)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (or single-channel) image, in the format of the path's suffix.

    Encoded by OpenCV in memory and written by Python: ``cv2.imwrite`` only returns False when the disk is full,
    where this raises an OSError with the system's reason and the path."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(Path(path).suffix, bgr)
    if not ok:
        raise ValueError(f"cannot encode a {image.dtype} image of shape {image.shape} as {Path(path).suffix}")
    write_bytes(path, encoded.tobytes())


def write_exr(path: str | Path, channels: dict[str, np.ndarray], attributes: dict | None = None) -> None:
    """Write an OpenEXR image (ZIP compression, scanlines) of ``channels`` (name -> ``(H, W)`` float32), with
    extra header ``attributes`` (name -> str, int, float or a float32 4x4 matrix) when given.

    Encoded in memory and written by :func:`write_bytes`: writing a file itself, OpenEXR loses a small image on a
    full disk without a word (its stream is flushed on close, unchecked) and reports a larger one's failure only
    in the message of a RuntimeError."""
    import OpenEXR

    header = {**(attributes or {}), "compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    encoded = io.BytesIO()
    with OpenEXR.File(header, channels) as exr:
        exr.write(encoded)
    write_bytes(path, encoded.getbuffer())


def robust_range(frames: Sequence[np.ndarray], percentiles: tuple[float, float] = VIS_PERCENTILES,
                 ) -> tuple[float, float]:
    """Low/high percentiles of ``frames`` (T, H, W), from an even subsample of at most VIS_SAMPLE_PIXELS pixels."""
    sample = strided_sample(frames, VIS_SAMPLE_PIXELS)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, percentiles)
    return float(lo), float(hi)


def colorize_depth(disparity: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map a disparity frame ``(H, W)`` to RGB uint8 with the fixed range ``[lo, hi]`` (near = bright)."""
    scaled = (np.asarray(disparity, dtype=np.float32) - lo) / max(hi - lo, 1e-12)
    gray = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def normals_to_rgb(normal: np.ndarray) -> np.ndarray:
    """Map unit normals ``(H, W, 3)`` to RGB uint8 as ``n * 0.5 + 0.5``."""
    return (np.clip(np.asarray(normal) * 0.5 + 0.5, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
