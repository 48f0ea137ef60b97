"""Unlabelled training clips: find the videos, fix the clips, and read them as tensors.

Videos are found recursively under each ``--data`` folder: video files, folders of frames, and the folders
written by ``bufferanytime synth`` (of which only ``rgb/`` is used; ground-truth files are ignored).

Each video contributes ``clips_per_video`` fixed *clip slots*; a slot's start frame and crop are drawn once from
``(seed, slot)``. An epoch visits every slot once, in an order drawn from ``(seed, epoch)``. Sample ``g`` of the
run (``g = step * global_batch + rank * batch + j``) is therefore a pure function of the seed and ``g``: a resumed
run sees exactly the clips an uninterrupted one would, and slots recur from the second epoch on, which is what
lets ``--cache`` keep their frozen computations. Crops are random in position and scale (between ``min_crop`` and
all of the largest crop of the target aspect ratio) and resized to the training resolution.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bufferanytime.errors import InputError
from bufferanytime.io.arrays import channels_first
from bufferanytime.io.hashing import content_signature, frame_files
from bufferanytime.io.images import read_rgb
from bufferanytime.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, open_video

SEQUENCE_FRAMES = "rgb"  # the frame folder of a synthetic sequence (bufferanytime.synthetic.write_video_dir)
MIN_CLIP_FRAMES = 2  # the stabilization loss needs at least one pair of frames
# Independent random streams derived from the seed (numpy SeedSequence entropy words).
_SLOT_STREAM, _ORDER_STREAM, _FRAME_STREAM = 1, 2, 3


@dataclass(frozen=True)
class VideoInfo:
    """One training video: a video file or a folder of frames."""

    path: str
    kind: str  # "video" or "folder"
    num_frames: int
    height: int
    width: int
    signature: str  # SHA-256 of the frames' bytes with ``by_content`` (keys cached clips), else ""


@dataclass(frozen=True)
class ClipSpec:
    """Which frames of which video, cropped where, at which resolution: everything that defines a clip."""

    path: str
    signature: str
    start: int
    stride: int
    length: int
    crop: tuple[int, int, int, int]  # x0, y0, width, height in source pixels
    res: tuple[int, int]  # (H, W) after resizing

    def to_dict(self) -> dict:
        return asdict(self)


_image_files = frame_files  # the frame images of a folder, in natural order


def _find_sources(root: Path) -> list[Path]:
    """Video files and frame folders under ``root``; a synthetic sequence folder yields its ``rgb/`` only."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if SEQUENCE_FRAMES in subdirs and _image_files(here / SEQUENCE_FRAMES):
            found.append(here / SEQUENCE_FRAMES)
            subdirs[:] = []  # depth/, normal/ ... next to rgb/ are ground truth
            continue
        if any(Path(f).suffix.lower() in IMAGE_EXTENSIONS for f in files):
            found.append(here)
        found.extend(here / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS)
    return found


def _describe(path: Path, by_content: bool) -> VideoInfo:
    source = open_video(path)
    num_frames = source.num_frames
    if source.kind == "video" and num_frames <= 0:  # no frame count in the container: count by decoding
        num_frames = sum(1 for _ in source)
    signature = content_signature(path) if by_content else ""
    return VideoInfo(str(path.resolve()), source.kind, num_frames, source.height, source.width, signature)


def discover_videos(roots: list[str | Path], progress: bool = False, by_content: bool = False) -> list[VideoInfo]:
    """Every usable video under the ``roots`` (folders, or video files), sorted by path.

    ``by_content`` hashes every video's bytes into its signature (what keys the training cache; read once per
    run). Raises InputError for a missing root or when nothing usable is found; unreadable videos (with a
    warning) and videos with fewer than two frames are skipped.
    """
    paths: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise InputError(f"{root}: no such data folder")
        if root.is_file():
            if root.suffix.lower() not in VIDEO_EXTENSIONS:
                raise InputError(f"{root}: not a video file or a folder")
            paths.append(root)
        else:
            paths.extend(_find_sources(root))
    unique = sorted({str(p.resolve()): p for p in paths}.items())
    videos = []
    for _, path in tqdm(unique, desc="indexing videos", unit="video", disable=not progress, leave=False):
        try:
            info = _describe(path, by_content)
        except InputError as exc:  # one unreadable video must not stop a run over thousands
            with tqdm.external_write_mode(file=sys.stderr):  # one line, above the progress bar if any
                sys.stderr.write(f"warning: skipping {exc}\n")
            continue
        if info.num_frames >= MIN_CLIP_FRAMES:
            videos.append(info)
    if not videos:
        raise InputError(
            f"no videos found under {', '.join(str(r) for r in roots)} (video files, frame folders, or synthetic "
            f"sequences with at least {MIN_CLIP_FRAMES} frames)"
        )
    return videos


def crop_box(rng: np.random.Generator, height: int, width: int, res: tuple[int, int], min_crop: float):
    """A random ``(x0, y0, w, h)`` with the aspect ratio of ``res``, scaled by ``[min_crop, 1]`` of the largest."""
    aspect = res[1] / res[0]
    full_w, full_h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    scale = rng.uniform(min_crop, 1.0)
    w = min(width, max(1, int(round(full_w * scale))))
    h = min(height, max(1, int(round(full_h * scale))))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    return x0, y0, w, h


class ClipSampler:
    """The run's clips as a pure function of ``(seed, sample index)``; see the module docstring."""

    def __init__(
        self,
        videos: list[VideoInfo],
        clip_len: int,
        stride: int,
        res: tuple[int, int],
        min_crop: float,
        clips_per_video: int,
        seed: int,
    ):
        self.videos = videos
        self.clip_len = clip_len
        self.stride = stride
        self.res = tuple(res)
        self.min_crop = min_crop
        self.clips_per_video = clips_per_video
        self.seed = seed
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its slot order): samples come epoch by epoch

    @property
    def num_slots(self) -> int:
        return len(self.videos) * self.clips_per_video

    def slot(self, index: int) -> ClipSpec:
        video = self.videos[index // self.clips_per_video]
        rng = np.random.default_rng([self.seed, _SLOT_STREAM, index])
        span = (video.num_frames - 1) // self.stride + 1  # frames available at this stride
        length = min(self.clip_len, span)
        last_start = video.num_frames - 1 - (length - 1) * self.stride
        start = int(rng.integers(0, last_start + 1))
        crop = crop_box(rng, video.height, video.width, self.res, self.min_crop)
        return ClipSpec(video.path, video.signature, start, self.stride, length, crop, self.res)

    def slot_of_sample(self, sample: int) -> int:
        epoch, position = divmod(sample, self.num_slots)
        return int(self._epoch_order(epoch)[position])

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which ``epoch`` visits the slots, drawn from ``(seed, epoch)`` once per epoch."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(self.num_slots))
        return self._order[1]

    def reg_fraction(self, sample: int) -> float:
        """Uniform in [0, 1): picks the one regularization frame of the sample once its length is known."""
        return float(np.random.default_rng([self.seed, _FRAME_STREAM, sample]).random())


def read_clip(spec: ClipSpec) -> torch.Tensor:
    """The clip's frames, cropped and resized: uint8 ``(L, 3, H, W)``; L < ``spec.length`` if the video is short."""
    path = Path(spec.path)
    wanted = [spec.start + i * spec.stride for i in range(spec.length)]
    frames = []
    if path.is_dir():
        files = _image_files(path)
        for index in wanted:
            if index >= len(files):
                break
            frames.append(read_rgb(files[index]))
    else:
        wanted_set, last = set(wanted), wanted[-1]
        for index, frame in enumerate(open_video(path)):
            if index in wanted_set:
                frames.append(frame)
            if index >= last:
                break
    if len(frames) < MIN_CLIP_FRAMES:
        raise InputError(f"{path}: only {len(frames)} frame(s) readable from frame {spec.start}")
    x0, y0, w, h = spec.crop
    height, width = spec.res
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        crop = frame[y0 : y0 + h, x0 : x0 + w]
        shrink = w > width or h > height
        out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(channels_first(out)))


class ClipDataset(torch.utils.data.Dataset):
    """``dataset[g]`` is sample ``g`` of the run: its spec, and either its cached frozen tensors or its frames.

    A clip that cannot be read (a video damaged in the middle, a broken frame) has ``frames`` None and its
    reason in ``error``: the trainer skips it, and since samples are a function of ``g`` it skips the same ones
    on resume. ``lookup(spec)`` (e.g. :meth:`bufferanytime.training.cache.ClipCache.load`) returns the cached
    tensors of a clip or None; frames are read only when it returns None. Runs in DataLoader workers.
    """

    def __init__(self, sampler: ClipSampler, lookup=None):
        self.sampler = sampler
        self.lookup = lookup

    def __len__(self) -> int:  # samples are indexed by any non-negative integer; this is one epoch
        return self.sampler.num_slots

    def __getitem__(self, sample: int) -> dict:
        spec = self.sampler.slot(self.sampler.slot_of_sample(sample))
        cached = self.lookup(spec) if self.lookup is not None else None
        frames, error = None, None
        if cached is None:
            try:
                frames = read_clip(spec)
            except InputError as exc:
                error = str(exc)
        return {
            "sample": sample,
            "spec": spec,
            "reg_fraction": self.sampler.reg_fraction(sample),
            "cached": cached,
            "frames": frames,
            "error": error,
        }


class SampleIndices(torch.utils.data.Sampler):
    """The sample indices one process trains on, from ``start_step`` to ``end_step`` (exclusive)."""

    def __init__(self, start_step: int, end_step: int, batch_size: int, rank: int, world_size: int):
        self.start_step, self.end_step = start_step, end_step
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.end_step):
            first = step * global_batch + self.rank * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.batch_size


def collate(items: list[dict]) -> list[dict]:
    """Keep samples as a list: clips are prepared one by one (cache hits and misses mix in a batch)."""
    return items
