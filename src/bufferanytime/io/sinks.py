"""Progressive outputs of a live stream: each frame's result is on disk as soon as it is computed.

A stream has no end to wait for, so the offline staging (:class:`~bufferanytime.io.outputs.OutputFiles`, which
moves a whole result into place at the end) cannot apply. Instead, in ``OUT/<name>/``:

Every name starts with ``KIND_online`` (e.g. ``depth_online_npy/``), which no offline output uses: a stream
written into the folder of an offline result of the same name leaves that result whole.

- ``npy``: ``KIND_online_npy/<frame>.npy``, float32 in the task's disk layout; ``png16``:
  ``KIND_online_png16/<frame>.png`` (the task's 16-bit encoding of that one frame; for depth each frame has its
  own scale, listed in the meta file). Each file is written under a hidden temporary name and renamed, so every
  file present is complete. ``<frame>`` is the index of the input frame (six digits): frames dropped under
  ``--max-latency`` leave gaps.
- ``vis``: ``KIND_online_vis.mp4``, a fragmented mp4 (``movflags=frag_keyframe+empty_moov``, a key frame every
  second, no encoder look-ahead) written as frames come: it plays up to its last complete fragment even when the
  process is killed; a normal end or an interrupt flushes it whole. One colour range for the stream: that of frame 0.
- ``mjpeg``: a stream of concatenated JPEGs (``ffplay -f mjpeg``) to a file or to standard output (``-``).
- ``KIND_online.meta.json``: written (atomically) after the first frame and rewritten at the end, with the status
  (``running``, ``finished``, ``interrupted``, ``stopped``, ``failed: ...``) and the frames written.

Only the files of this run are created or replaced; anything else in the folder stays.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from bufferanytime.io.atomic import atomic_path, write_text_atomic
from bufferanytime.io.outputs import make_dirs, remove_empty_dirs, save_npy
from bufferanytime.io.video import VIS_CODEC_OPTIONS, VideoWriter

# The progressive mp4: fragments that play on their own, cut at every key frame (one per second of video), each
# flushed to the file when written (without flush_packets a killed run's copy held no playable fragment).
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
# No frames held back, on one thread: the progressive file is encoded while the model runs on the other cores.
LOW_LATENCY_X264 = {"tune": "zerolatency", "threads": "1"}
JPEG_QUALITY = 90
ONLINE_SUFFIX = "_online"  # after the task's name in every output name: offline outputs never carry it


def _frame_name(index: int, suffix: str) -> str:
    return f"{index:06d}{suffix}"


class ProgressiveOutputs:
    """Writes each result frame as it comes (``write``) and finalises on ``close`` (also after an interrupt).

    ``task`` is the buffer's :class:`~bufferanytime.tasks.Task`; ``save`` a subset of npy, png16, vis;
    ``mjpeg`` a path, ``-`` for standard output, or None.
    """

    def __init__(self, folder: str | Path, task, save: tuple[str, ...], fps: float, mjpeg: str | None = None):
        self.folder, self.task, self.save, self.fps = Path(folder), task, tuple(save), fps
        self.mjpeg = mjpeg
        self.frames = 0
        self.last_index: int | None = None
        self.value_range = None
        self.png16_info: dict | None = None
        self.png16_scales: list[float] = []
        self._video: VideoWriter | None = None
        self._jpeg: BinaryIO | None = None
        self._created: list[Path] = []

    @property
    def names(self) -> dict[str, str]:
        """Output name of each format, relative to the folder: ``KIND_online...``, none of them an offline output's
        name, so a stream written into the folder of an offline result leaves that result whole and matching."""
        name = f"{self.task.name}{ONLINE_SUFFIX}"
        return {"npy": f"{name}_npy", "png16": f"{name}_png16", "vis": f"{name}_vis.mp4",
                "meta": f"{name}.meta.json"}

    def write(self, index: int, frame: np.ndarray) -> None:
        """Put the result ``frame`` (disk layout) of input frame ``index`` in every chosen output.

        When a file of the frame cannot be written (a full disk), its other files are removed again: the frame is
        in every output or in none (the mp4, written last, holds the frames written whole)."""
        if self.frames == 0:
            self._start(frame)
        names = self.names
        done: list[Path] = []
        try:
            if "npy" in self.save:
                done.append(self.folder / names["npy"] / _frame_name(index, ".npy"))
                with atomic_path(done[-1]) as tmp:
                    save_npy(tmp, np.asarray(frame, dtype=np.float32))
            if "png16" in self.save:
                done.append(self._write_png16(index, frame))
        except BaseException:
            for path in done:
                path.unlink(missing_ok=True)
            raise
        if self._video is not None or self._jpeg is not None:
            rgb = self.task.to_rgb(frame, self.value_range)
            if self._video is not None:
                self._video.write(rgb)
            if self._jpeg is not None:
                self._write_jpeg(rgb)
        self.frames += 1
        self.last_index = index

    def _start(self, frame: np.ndarray) -> None:
        """Folders, colour range, mp4 and MJPEG outputs, from the first frame."""
        self._created = make_dirs(self.folder)
        names = self.names
        for fmt in ("npy", "png16"):
            if fmt in self.save:
                self._created = make_dirs(self.folder / names[fmt]) + self._created
        self.value_range = self.task.vis_range(np.asarray(frame)[None])
        if "vis" in self.save:
            self._video = VideoWriter(self.folder / names["vis"], self.fps, container_options=FRAGMENTED_MP4,
                                      codec_options={**VIS_CODEC_OPTIONS, **LOW_LATENCY_X264,
                                                     "g": str(max(1, round(self.fps)))})
        if self.mjpeg == "-":
            self._jpeg = sys.stdout.buffer
        elif self.mjpeg is not None:
            self._jpeg = open(self.mjpeg, "wb")  # noqa: SIM115 - closed in close()

    def _write_png16(self, index: int, frame: np.ndarray) -> Path:
        """The task's 16-bit encoding of this one frame, renamed into place; its decoding info is kept."""
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".png16-") as tmp:
            info = self.task.write_png16(np.asarray(frame)[None], Path(tmp) / "f")
            target = self.folder / self.names["png16"] / _frame_name(index, ".png")
            (Path(tmp) / "f" / _frame_name(0, ".png")).replace(target)
        if "scale" in info:
            self.png16_scales.append(float(info.pop("scale")))
        self.png16_info = info
        return target

    def _write_jpeg(self, rgb: np.ndarray) -> None:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            self._jpeg.write(data.tobytes())
            self._jpeg.flush()

    def formats(self) -> dict:
        """What was written and how to read it, for the meta file."""
        names, info = self.names, {}
        if "npy" in self.save:
            info["npy"] = {"dir": names["npy"], "files": "<input frame index, 6 digits>.npy", "dtype": "float32"}
        if "png16" in self.save:
            info["png16"] = {**(self.png16_info or {}), "dir": names["png16"]}
            if self.png16_scales:
                info["png16"]["scale_per_written_frame"] = self.png16_scales
        if "vis" in self.save:
            info["vis"] = {"file": names["vis"], "fragmented": True, **self.task.vis_info(self.value_range)}
        if self.mjpeg is not None:
            info["mjpeg"] = {"to": "standard output" if self.mjpeg == "-" else self.mjpeg}
        return info

    def write_meta(self, meta: dict) -> None:
        """Write the meta file atomically (``meta`` plus the formats and the frame count)."""
        if self.frames:
            full = {**meta, "frames_written": self.frames, "last_frame_index": self.last_index,
                    "outputs": self.formats()}
            write_text_atomic(self.folder / self.names["meta"], json.dumps(full, indent=2) + "\n")

    def close(self) -> None:
        """Flush the mp4 (playable whole) and the MJPEG stream; remove the folders created if nothing was written."""
        video, jpeg = self._video, self._jpeg
        self._video = self._jpeg = None
        try:
            if video is not None:
                video.close()
        finally:
            if jpeg is not None and jpeg is not sys.stdout.buffer:
                jpeg.close()
            if not self.frames:
                remove_empty_dirs(self._created)
