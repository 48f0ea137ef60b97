"""Streaming video input and output.

Inputs are video files (through PyAV), folders of images (natural sort), single images, or ``.txt`` lists of
any of these. Frames are decoded one at a time as ``(H, W, 3)`` uint8 RGB arrays and never all held in memory;
16-bit images are scaled to 8 bits (``round(v / 257)``), not clipped. Problems a user can cause (missing files,
unreadable, truncated or oversized inputs, mixed frame sizes) raise :class:`~bufferanytime.errors.InputError`
with a one-line message, as early as possible: a video's packets are counted when it is opened (a demux without
decoding, a few percent of the decode time), so a truncated file is refused before any frame is processed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.io.images import MAX_FRAME_PIXELS, open_image, read_rgb
from bufferanytime.io.threads import HeadStart

VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MIN_SIDE = 8  # smaller frames cannot go through a ViT with 14-pixel patches meaningfully
MIN_VIDEO_FRAMES = 2  # a video model needs at least two frames; single images are accepted as image files
DEFAULT_FPS = 24.0  # for image folders, which carry no frame rate
# A video is reported as truncated when it holds (packets counted at open) or decodes (frames) fewer than this
# fraction of the count announced (minus one): headers are sometimes off by a frame, a cut-off file by far more.
TRUNCATION_TOLERANCE = 0.98
# At most this many bytes of frames are decoded ahead while the model loads (VideoSource.decode_ahead), and at most
# the first window where it is known: 97 frames of 1280x720, most of a first window of 110, taken in about 0.6 s of
# the 2.5 s that importing torch and transformers and loading a model take. They are handed over as the first
# window is gathered.
DECODE_AHEAD_BYTES = 256 * 2**20
# H.264 options for visualisations (colour-mapped buffers, side-by-sides): x264's veryfast preset encodes 2.5x
# faster than its default (medium) at the same CRF and about the same file size (120 frames of a 1280x720 depth
# visualisation: 2.8 vs 6.9 s, 6.7 vs 6.8 MB, PSNR 32.7 vs 33.5 dB). The visualisation is encoded after the last
# frame (its colour range needs the whole video), so this is time the user waits for.
# It runs on VIS_SLICES slice threads, one slice of each frame per thread: slices do not depend on how the threads
# are scheduled, so the bytes stay the same under any load (unlike frame threads, below). The count is fixed, not
# the machine's: the slices are in the file. 120 frames of a 1280x720 depth visualisation: 2.37 vs 3.38 s on one
# thread, the same size within 0.1 % and the same PSNR (AMD EPYC, 2 cores). x264 gives frames of fewer than 8 rows
# of 16-pixel macroblocks (113 pixel rows) one thread.
VIS_SLICES = 2
VIS_CODEC_OPTIONS = {"preset": "veryfast", "threads": str(VIS_SLICES), "sliced-threads": "1"}
# H.264 options of every file written, so that the same frames make the same bytes on one machine, under any load
# and in any process (across machines, x264's assembly differs by CPU):
# - x264's lookahead runs on a thread of its own that hands frame decisions over as they come ("sync-lookahead"):
#   how far it got decided the frame types, and the same 6 frames gave one of three files (up to a third of the
#   encodes of one process differed);
# - with several frame threads, runs on two engines still wrote different visualisations of identical arrays on a
#   loaded machine, so x264 runs on one thread (its thread count otherwise follows the machine's CPUs). On one
#   thread 60 frames of a 1280x720 depth visualisation encoded as fast as on four (1.6 s, 2 busy cores) into the
#   same file size;
# - x264's AVX-512 kernels read memory that was never written: the same YUV frames gave one of three files by
#   what the process's heap held before (glibc's MALLOC_PERTURB_ picks which), a quarter of fresh processes
#   wrote a different file. Up to AVX2 the bytes do not depend on it, so a CPU with AVX-512 gets x264's AVX2 set
#   (60 frames of a 1280x720 depth visualisation: 2.06 s either way, the same file size).
X264_WITHOUT_AVX512 = "avx2"  # x264's --asm name for the instruction sets up to AVX2 (every AVX-512 CPU has them)


def _cpu_has_avx512() -> bool:
    """Whether this CPU (and its OS) runs AVX-512, as NumPy's dispatcher detected it; False where unknown."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return False
    return bool(__cpu_features__.get("AVX512F"))


REPEATABLE_X264 = {"threads": "1",
                   "x264-params": "sync-lookahead=0" + (f":asm={X264_WITHOUT_AVX512}" if _cpu_has_avx512() else "")}


def natural_key(text: str) -> list:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


def _check_size(width: int, height: int, where: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{where}: frame is {width}x{height}, smaller than the minimum side of {MIN_SIDE} px")
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(f"{where}: frame is {width}x{height}, more than the limit of {MAX_FRAME_PIXELS:,} pixels")


@dataclass
class VideoSource:
    """A lazily decoded frame stream: iterate it for ``(H, W, 3)`` uint8 RGB frames.

    ``max_frames`` limits the number of frames yielded after applying ``stride`` (every ``stride``-th frame).
    ``num_frames`` is the exact count for image inputs and the container's estimate for videos.
    """

    path: Path
    kind: str  # "video", "folder" or "image"
    width: int
    height: int
    fps: float
    num_frames: int
    max_frames: int | None = None
    stride: int = 1
    _ahead: HeadStart | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The output stem: the file name without extension, or the folder's real name (also for ``.``)."""
        return self.path.stem if self.path.is_file() else self.path.resolve().name

    @property
    def expected_frames(self) -> int:
        """Frames this source is expected to yield after stride and max_frames."""
        n = -(-self.num_frames // self.stride) if self.num_frames > 0 else 0
        return min(n, self.max_frames) if self.max_frames else n

    def _raw_frames(self) -> Iterator[np.ndarray]:
        if self.kind == "video":
            yield from _decode_video(self.path)
        elif self.kind == "folder":
            for file in _list_images(self.path):
                yield _read_image(file, expect=(self.width, self.height))
        else:
            yield _read_image(self.path)

    def decode_ahead(self, max_frames: int | None = None, max_bytes: int = DECODE_AHEAD_BYTES) -> None:
        """Start decoding the first frames on a thread now, at most ``max_frames`` (None: no count) and
        ``max_bytes`` of them, for the next iteration to take over (then decoding goes on from there): the
        decoding of a first window overlaps what comes before it, such as loading the model. Called again before
        that iteration, it raises the count (a caller that learns the first window's length later); ``close()``
        drops the frames if no iteration comes."""
        limit = max(1, max_bytes // (self.width * self.height * 3))
        limit = min(limit, max_frames or limit)
        if self._ahead is not None:
            self._ahead.allow(limit)
        else:
            self._ahead = HeadStart(self._frames(), limit, "decode-ahead")

    def close(self) -> None:
        """Drop the frames decoded ahead and not taken by an iteration (and stop decoding them)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        ahead, self._ahead = self._ahead, None
        return iter(ahead) if ahead is not None else self._frames()

    def _frames(self) -> Iterator[np.ndarray]:
        count = raw = 0
        for raw, frame in enumerate(self._raw_frames(), start=1):
            if (raw - 1) % self.stride:
                continue
            yield frame
            count += 1
            if self.max_frames and count >= self.max_frames:
                return
        if self.kind != "video":
            return
        if raw == 0:
            raise InputError(f"{self.path}: video has no decodable frame")
        if raw < self.num_frames * TRUNCATION_TOLERANCE - 1:
            raise InputError(f"{self.path}: video is truncated or corrupt (decoded {raw} of its {self.num_frames} "
                             "frames)")
        if count < MIN_VIDEO_FRAMES:
            raise InputError(
                f"{self.path}: video has {count} frame(s) to process; at least {MIN_VIDEO_FRAMES} are needed "
                "(pass a single image as an image file)"
            )


def _decode_video(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield rgb_array(frame)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: cannot decode video ({exc.strerror or type(exc).__name__})") from exc


def _probe_video(path: Path) -> tuple[int, int, float, int]:
    """Size, frame rate and frame count of a video; refuses one whose packets fall short of its header."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            announced = stream.frames
            if not announced and stream.duration and stream.time_base:
                announced = int(round(float(stream.duration * stream.time_base) * fps))
            seconds = _announced_seconds(container, stream) if not announced else None
            packets, end = _count_packets(container, stream)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video ({exc.strerror or type(exc).__name__})") from exc
    if not width or not height:
        raise InputError(f"{path}: video stream has no frame size")
    if packets == 0:
        raise InputError(f"{path}: video has no decodable frame")
    if announced and packets < announced * TRUNCATION_TOLERANCE - 1:
        raise InputError(f"{path}: video is truncated (holds {packets} of the {announced} frames its header "
                         "announces)")
    if seconds and end is not None and end + 1 / fps < seconds * TRUNCATION_TOLERANCE - 1 / fps:
        raise InputError(f"{path}: video is truncated (its frames end at {end + 1 / fps:.2f} s of the "
                         f"{seconds:.2f} s its header announces)")
    return width, height, fps, packets


def _count_packets(container, stream) -> tuple[int, float | None]:
    """The stream's non-empty packets (a demux, no decoding), and the time of the last one's start in seconds."""
    packets, last = 0, None
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
            if packet.pts is not None:
                last = packet.pts if last is None else max(last, packet.pts)
    start = stream.start_time or 0
    return packets, (float((last - start) * stream.time_base) if last is not None and stream.time_base else None)


def _announced_seconds(container, stream) -> float | None:
    """The video's duration as a Matroska/WebM header states it (these carry no frame count, so a truncated file
    is found by its last frame's time): the stream's DURATION tag, or the file's duration when the video is its
    only stream (an audio track may run longer). None for other containers or when the header has none."""
    if "matroska" not in container.format.name:
        return None
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        try:
            hours, minutes, secs = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(secs)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _image_size(path: Path) -> tuple[int, int]:
    with open_image(path) as img:
        _check_size(*img.size, str(path))
        return img.size


def _read_image(path: Path, expect: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image as ``(H, W, 3)`` uint8 RGB, refusing one of another size than ``expect`` (width, height)."""
    frame = read_rgb(path)
    _check_size(frame.shape[1], frame.shape[0], str(path))
    if expect is not None and (frame.shape[1], frame.shape[0]) != expect:
        raise InputError(
            f"{path}: size {frame.shape[1]}x{frame.shape[0]} differs from the folder's first image "
            f"({expect[0]}x{expect[1]})"
        )
    return frame


def open_video(path: str | Path, max_frames: int | None = None, stride: int = 1,
               per_frame: bool = False) -> VideoSource:
    """Open a video file, image folder or single image as a :class:`VideoSource`, checking it cheaply first.

    Image folders are checked for a common frame size from the image headers, before anything is decoded. A
    video model needs two frames: a folder of one image is refused unless ``per_frame`` (the prior alone runs on
    it); a single image file is always accepted. Anything but a regular file or a folder is refused: a FIFO or a
    device would block or never end (``--online`` reads those).
    """
    path = Path(path)
    if stride < 1:
        raise InputError(f"--stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {max_frames}")
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if not path.is_dir() and not path.is_file():  # reading a FIFO or a device would block, or never end
        raise InputError(f"{path}: not a regular file (a pipe, device or socket); to read a live stream use "
                         f"--online {path}")
    if path.is_dir():
        source = _open_folder(path, max_frames, stride)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        width, height = _image_size(path)
        return VideoSource(path, "image", width, height, DEFAULT_FPS, 1, max_frames, stride)
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        width, height, fps, frames = _probe_video(path)
        _check_size(width, height, str(path))
        source = VideoSource(path, "video", width, height, fps, frames, max_frames, stride)
    else:
        raise InputError(f"{path}: unsupported file type '{path.suffix.lower()}' "
                         f"(videos: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    _check_frame_count(source, per_frame)
    return source


def _open_folder(path: Path, max_frames: int | None, stride: int) -> VideoSource:
    """An image folder, checked for a common frame size from the image headers, before anything is decoded."""
    files = _list_images(path)
    if not files:
        raise InputError(f"{path}: directory contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    width, height = _image_size(files[0])
    for file in files[1:]:
        if (size := _image_size(file)) != (width, height):
            raise InputError(f"{path}: images of different sizes ({width}x{height} and {size[0]}x{size[1]} in "
                             f"{file.name})")
    return VideoSource(path, "folder", width, height, DEFAULT_FPS, len(files), max_frames, stride)


def _check_frame_count(source: VideoSource, per_frame: bool = False) -> None:
    """A video or an image folder of one frame, or a clip cut down to one (``--max-frames``, ``--stride``), is
    refused up front; a folder of one image is accepted with ``per_frame`` (the prior alone)."""
    if source.expected_frames >= MIN_VIDEO_FRAMES or (per_frame and source.kind == "folder"
                                                       and source.num_frames == 1):
        return
    if source.num_frames < MIN_VIDEO_FRAMES:
        what, hint = ("video has 1 frame", "pass a single image as an image file") if source.kind == "video" else (
            "folder holds 1 image", "pass the image itself as an image file, or use --per-frame")
        raise InputError(f"{source.path}: {what}; a video model needs at least {MIN_VIDEO_FRAMES} frames ({hint})")
    raise InputError(
        f"{source.path}: only {source.expected_frames} frame would be processed (--max-frames {source.max_frames}, "
        f"--stride {source.stride}); a video model needs at least {MIN_VIDEO_FRAMES} (pass a single image as an "
        "image file)"
    )


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand ``.txt`` list files (one path per line, ``#`` comments, relative to the list) into paths.

    A list that names no input, or cannot be read as text, raises InputError.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.suffix.lower() != ".txt" or not item.is_file():
            paths.append(item)
            continue
        try:
            lines = [line.strip() for line in item.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{item}: cannot read the input list ({exc})") from exc
        entries = [Path(line) for line in lines if line and not line.startswith("#")]
        if not entries:
            raise InputError(f"{item}: the input list names no input")
        paths += [entry if entry.is_absolute() else item.parent / entry for entry in entries]
    return paths


class VideoWriter:
    """Write ``(H, W, 3)`` uint8 RGB frames to an H.264 (or MPEG-4) file, one frame at a time.

    Odd sizes are padded by one pixel (yuv420p needs even sides). ``container_options`` go to the muxer (e.g.
    ``movflags`` for a fragmented mp4), ``codec_options`` to the H.264 encoder (e.g. ``tune``, ``g``).
    """

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, crf: int = 18,
                 container_options: dict[str, str] | None = None, codec_options: dict[str, str] | None = None):
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.container_options = container_options or {}
        self.codec_options = codec_options or {}
        self._container = None
        self._stream = None
        self._format = "mp4" if self.path.suffix.lower() not in VIDEO_EXTENSIONS else None

    def _open(self, height: int, width: int) -> None:
        self._container = av.open(str(self.path), mode="w", format=self._format, options=self.container_options)
        fps = _as_fraction(self.fps)
        try:
            self._stream = self._container.add_stream("libx264", rate=fps)
            self._stream.options = {"crf": str(self.crf), **REPEATABLE_X264, **self.codec_options}
        except (av.error.FFmpegError, ValueError):
            self._stream = self._container.add_stream("mpeg4", rate=fps)
            self._stream.bit_rate = 8_000_000
        self._stream.width = width + width % 2
        self._stream.height = height + height % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._container is None:
            self._open(frame.shape[0], frame.shape[1])
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        video_frame = _to_yuv420p(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self, flush: bool = True) -> None:
        """Flush the encoder (unless ``flush`` is False, as after an error) and close the file.

        Safe at any point: an interrupt between opening the file and adding its stream leaves no stream to flush."""
        container, stream = self._container, self._stream
        self._container = self._stream = None
        if container is None:
            return
        try:
            if flush and stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(flush=exc_type is None)


def rgb_array(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as ``(H, W, 3)`` uint8 RGB, converted on one thread (:func:`_on_one_thread`)."""
    return _on_one_thread(frame, "rgb24").to_ndarray()


def _to_yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame in the encoder's pixel format, converted on one thread (:func:`_on_one_thread`)."""
    return _on_one_thread(frame, "yuv420p")


def _on_one_thread(frame: av.VideoFrame, pixel_format: str) -> av.VideoFrame:
    """The frame in ``pixel_format``, converted on one swscale thread.

    Left to its default, a converter runs swscale slice threads, one per CPU: the conversion then depends on the
    machine, and a converter freed in a child forked with a pre-exec function (as Ray starts its processes), where
    those threads do not exist, waits for them forever (a frame still held by another thread of the parent hung
    such a child). One thread converts a frame in milliseconds."""
    try:
        return frame.reformat(format=pixel_format, threads=1)
    except TypeError:  # PyAV before ``threads``: its swscale context is single-threaded anyway
        return frame.reformat(format=pixel_format)


def _as_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS,
                codec_options: dict[str, str] | None = None) -> None:
    """Write an iterable of ``(H, W, 3)`` uint8 RGB frames to a video file (``codec_options``: see VideoWriter)."""
    with VideoWriter(path, fps, codec_options=codec_options) as writer:
        for frame in frames:
            writer.write(frame)
