"""The user's footage: opened, split into a part to train on and a part held out, and kept in memory as frames.

Inputs are what ``bufferanytime depth`` takes (videos, frame folders, ``.txt`` lists of them). The held-out part is
never trained on; it decides when to stop (the validation loss) and whether the result is kept (the guard rails):

- several videos: whole videos are held out (the last ``HOLD_OUT_FRACTION`` of them in input order, at least one);
- one video: its last ``HOLD_OUT_FRACTION`` of frames (at least ``MIN_CLIP_FRAMES``), a later time segment.

Frames are decoded once, resized to the model's own inference size, and held as uint8: at most
``MAX_FOOTAGE_BYTES`` of them (a long training part is sampled as evenly spaced runs of frames) and at most
``MAX_HELD_OUT_FRAMES`` frames of each held-out range.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.errors import InputError
from bufferanytime.inference.options import scaled_size
from bufferanytime.io.hashing import content_signature
from bufferanytime.io.images import read_rgb
from bufferanytime.io.video import IMAGE_EXTENSIONS, expand_inputs, natural_key, open_video

MIN_CLIP_FRAMES = 4  # the shortest clip trained or validated on (the stabilization loss needs frame pairs)
HOLD_OUT_FRACTION = 0.25  # of the videos (several inputs) or of the frames (one input) held out for validation
MAX_FOOTAGE_BYTES = 768 * 2**20  # frames kept in memory (uint8 at the model's inference size)
MAX_HELD_OUT_FRAMES = 96  # frames kept of each held-out range (the validation and guard-rail cost grows with them)
MAX_HELD_OUT_RANGES = 4  # held-out videos used (the first ones) when many are held out
TRAIN_RUN_FRAMES = 32  # a long training part is kept as evenly spaced runs of this many consecutive frames
# Footage whose consecutive frames differ by less than this on average (fraction of the 0-255 range) is static:
# every prediction is then already constant in time, and there is nothing for the stabilization loss to teach.
STATIC_CHANGE = 0.5 / 255
# Footage whose image expands or shrinks by at least this fraction per frame (the median over frame pairs of the
# divergence of an affine fit to the flow, halved) moves along the camera's axis, as a car's camera does: its depth
# changes along the flow, which the stabilization loss takes for flicker. On the validation clips of
# benchmarks/adapt_domain_shift.py (6 each) a camera moving straight ahead gave 0.017-0.050, one turning on the
# spot 0.0006-0.0070, a wandering one 0.003-0.016.
FORWARD_MOTION = 0.01
MOTION_PAIRS = 24  # frame pairs measured, evenly spread over the training part
MOTION_SIDE = 256  # longest side the pairs are measured at (the expansion does not depend on the size)


@dataclass(frozen=True)
class Source:
    """One input: where it is, what it holds, and a SHA-256 of its content (recorded with the result)."""

    path: Path
    name: str
    kind: str  # "video" or "folder"
    frames: int
    width: int
    height: int
    fps: float
    sha256: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "name": self.name, "kind": self.kind, "frames": self.frames,
                "size": [self.height, self.width], "fps": round(self.fps, 3), "sha256": self.sha256}


@dataclass(frozen=True)
class Span:
    """Frames ``start..end-1`` of source ``source``, trained on or held out."""

    source: int
    start: int
    end: int
    held_out: bool

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Segment:
    """Consecutive frames of a span kept in memory: uint8 ``(T, H, W, 3)`` at the model's inference size."""

    span: Span
    frames: np.ndarray


@dataclass
class Footage:
    sources: list[Source]
    spans: list[Span]  # the split, as decided (before sampling)
    segments: list[Segment]  # the frames kept

    @property
    def train(self) -> list[Segment]:
        return [s for s in self.segments if not s.span.held_out]

    @property
    def held_out(self) -> list[Segment]:
        return [s for s in self.segments if s.span.held_out]

    def split_record(self) -> dict:
        """``{"train": [...], "held_out": [...]}``: ``{"input", "start", "end"}`` of every span kept."""
        out: dict[str, list] = {"train": [], "held_out": []}
        for segment in self.segments:
            span = segment.span
            out["held_out" if span.held_out else "train"].append(
                {"input": self.sources[span.source].name, "start": span.start, "end": span.start + len(segment.frames)})
        return out


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


#: How the per-input work is run: ``mapper(function, [args, ...])`` gives ``[function(*args), ...]`` in order
#: (in this process by default; :class:`bufferanytime.adapt.engines.RayFootage` runs each call on a Ray worker).
Mapper = Callable[[Callable, list[tuple]], list]


def run_here(function: Callable, calls: list[tuple]) -> list:
    """The default :data:`Mapper`: every call in this process, one after the other."""
    return [function(*args) for args in calls]


def open_sources(inputs: Iterable[str | Path], mapper: Mapper = run_here) -> list[Source]:
    """Every input, opened and checked (one InputError for a missing or unreadable one), duplicates once."""
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input: pass one or more videos, frame folders or .txt lists")
    unique, seen = [], set()
    for path in paths:
        key = str(Path(path).resolve())
        if key not in seen:
            seen.add(key)
            unique.append((Path(path), key))
    return mapper(open_source, unique)


def open_source(path: Path, resolved: str) -> Source:
    """One input, opened at ``resolved`` (its absolute path: the same from any process) and hashed; its record
    and its errors name ``path`` as given."""
    with _named_as(path, resolved):
        video = open_video(resolved)
        if video.kind == "image":
            raise InputError(f"{path}: a single image; adapt learns from videos (files or frame folders)")
        return Source(Path(path), video.name, video.kind, video.num_frames, video.width, video.height, video.fps,
                      content_signature(Path(resolved)))


def read_source(source: Source, spans: list[Span], size: tuple[int, int], resolved: str) -> list[np.ndarray]:
    """:func:`read_frames` of ``source`` read at ``resolved``, its absolute path (the same from any process)."""
    with _named_as(source.path, resolved):
        return read_frames(replace(source, path=Path(resolved)), spans, size)


@contextmanager
def _named_as(path: Path, resolved: str) -> Iterator[None]:
    """An InputError raised inside names ``path`` as given instead of its absolute path."""
    try:
        yield
    except InputError as exc:
        raise InputError(str(exc).replace(resolved, str(path))) from None


def split(sources: list[Source]) -> list[Span]:
    """The training and held-out spans (see the module docstring); InputError when the footage is too short."""
    usable = [i for i, s in enumerate(sources) if s.frames >= MIN_CLIP_FRAMES]
    for i, source in enumerate(sources):
        if i not in usable:
            _warn(f"{source.path}: {source.frames} frame(s), fewer than a clip of {MIN_CLIP_FRAMES}; not used")
    if len(usable) >= 2:
        held = max(1, round(len(usable) * HOLD_OUT_FRACTION))
        return [Span(i, 0, sources[i].frames, k >= len(usable) - held) for k, i in enumerate(usable)]
    frames = sources[usable[0]].frames if usable else max((s.frames for s in sources), default=0)
    if not usable or frames < 2 * MIN_CLIP_FRAMES:
        names = ", ".join(str(s.path) for s in sources)
        raise InputError(f"footage too short for one clip: {names} holds {frames} frame(s) in its longest video; "
                         f"adapt needs {2 * MIN_CLIP_FRAMES} (a clip of {MIN_CLIP_FRAMES} to train on and one to "
                         "hold out), or several videos")
    held = max(MIN_CLIP_FRAMES, round(frames * HOLD_OUT_FRACTION))
    first = usable[0]
    return [Span(first, 0, frames - held, False), Span(first, frames - held, frames, True)]


def _runs(span: Span, keep: int) -> list[Span]:
    """``span`` cut to about ``keep`` frames: evenly spaced runs of ``TRAIN_RUN_FRAMES`` consecutive frames."""
    if span.length <= keep:
        return [span]
    count = max(1, keep // TRAIN_RUN_FRAMES)
    size = min(TRAIN_RUN_FRAMES, span.length)
    starts = np.linspace(span.start, span.end - size, count).round().astype(int)
    return [Span(span.source, int(s), int(s) + size, span.held_out) for s in sorted(set(starts.tolist()))]


def sampled_spans(sources: list[Source], spans: list[Span], rule: dict) -> list[Span]:
    """The spans whose frames are kept: held-out ranges cut to ``MAX_HELD_OUT_FRAMES`` (the first
    ``MAX_HELD_OUT_RANGES``), training ranges sampled to fit ``MAX_FOOTAGE_BYTES`` with them."""
    def frame_bytes(span: Span) -> int:
        h, w = scaled_size(sources[span.source].height, sources[span.source].width, rule)
        return h * w * 3

    held = [Span(s.source, s.start, min(s.end, s.start + MAX_HELD_OUT_FRAMES), True)
            for s in spans if s.held_out][:MAX_HELD_OUT_RANGES]
    train = [s for s in spans if not s.held_out]
    room = MAX_FOOTAGE_BYTES - sum(s.length * frame_bytes(s) for s in held)
    wanted = sum(s.length * frame_bytes(s) for s in train)
    if wanted > room:
        share = max(room, 0) / wanted
        train = [run for s in train for run in _runs(s, max(MIN_CLIP_FRAMES, math.floor(s.length * share)))]
    return train + held


def read_frames(source: Source, spans: list[Span], size: tuple[int, int]) -> list[np.ndarray]:
    """The frames of each span of ``source`` at ``size`` (H, W), decoding the source once, in order."""
    wanted = {i for span in spans for i in range(span.start, span.end)}
    frames: dict[int, np.ndarray] = {}
    if source.kind == "folder":
        files = sorted((p for p in source.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda p: natural_key(p.name))
        for i in sorted(wanted):
            frames[i] = _resized(read_rgb(files[i]), size)
    else:
        last = max(wanted)
        for i, frame in enumerate(open_video(source.path)):
            if i in wanted:
                frames[i] = _resized(frame, size)
            if i >= last:
                break
    out = []
    for span in spans:
        got = [frames[i] for i in range(span.start, span.end) if i in frames]
        if len(got) < MIN_CLIP_FRAMES:
            raise InputError(f"{source.path}: only {len(got)} frame(s) readable from frame {span.start}")
        out.append(np.stack(got))
    return out


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == tuple(size):
        return frame
    shrink = size[0] < frame.shape[0]
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def load_footage(inputs: Iterable[str | Path], rule: dict, mapper: Mapper = run_here) -> Footage:
    """Open, split and read the inputs (see the module docstring); ``rule`` is the model's inference resize rule.
    ``mapper`` runs the work of each input (opening and hashing it, then decoding and resizing its kept frames);
    the split and the sampling are decided here, so the frames are the same whichever mapper read them."""
    sources = open_sources(inputs, mapper)
    spans = split(sources)
    kept = sampled_spans(sources, spans, rule)
    calls = [(source, [s for s in kept if s.source == index], scaled_size(source.height, source.width, rule),
              str(source.path.resolve())) for index, source in enumerate(sources)]
    calls = [call for call in calls if call[1]]
    segments = []
    for (_, mine, _, _), frames in zip(calls, mapper(read_source, calls), strict=True):
        segments += [Segment(s, f) for s, f in zip(mine, frames, strict=True)]
    order = {id(s): k for k, s in enumerate(kept)}
    segments.sort(key=lambda seg: order.get(id(seg.span), 0))
    return Footage(sources, spans, segments)


def mean_change(segments: list[Segment]) -> float:
    """Mean absolute change between consecutive frames, as a fraction of the 0-255 range (0: a still picture)."""
    total, pairs = 0.0, 0
    for segment in segments:
        f = segment.frames
        for k in range(len(f) - 1):
            total += float(np.abs(f[k + 1].astype(np.int16) - f[k].astype(np.int16)).mean()) / 255.0
            pairs += 1
    return total / pairs if pairs else 0.0


def forward_motion(segments: list[Segment]) -> float:
    """How fast the camera moves along its axis: the median over up to ``MOTION_PAIRS`` consecutive frame pairs
    of ``|du/dx + dv/dy| / 2`` of the best affine fit to their DIS flow (the image's expansion per frame, a
    fraction; 0 for a camera that turns or slides sideways in front of a far scene). Imports torch when called,
    not with this module (Ray workers read footage without it)."""
    from bufferanytime.flow.dis import DISFlow
    from bufferanytime.io.arrays import frames_to_tensor

    pairs = [(segment.frames, k) for segment in segments for k in range(len(segment.frames) - 1)]
    if not pairs:
        return 0.0
    chosen = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(MOTION_PAIRS, len(pairs))).round().astype(int)]
    height, width = chosen[0][0].shape[1:3]
    scale = min(1.0, MOTION_SIDE / max(height, width))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    src, dst = (frames_to_tensor([cv2.resize(f[k + i], size, interpolation=cv2.INTER_AREA) for f, k in chosen])
                for i in (0, 1))
    flows = DISFlow()(src, dst).numpy()
    return float(np.median([abs(_expansion(flow)) for flow in flows]))


def _expansion(flow: np.ndarray) -> float:
    """Half the divergence of the least-squares affine fit ``flow ~ A x + b`` to a flow ``(2, H, W)``."""
    height, width = flow.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    design = np.stack([np.ones(height * width), (xs - (width - 1) / 2).ravel(), (ys - (height - 1) / 2).ravel()], 1)
    fit, *_ = np.linalg.lstsq(design, flow.reshape(2, -1).T.astype(np.float64), rcond=None)
    return float(fit[1, 0] + fit[2, 1]) / 2


@dataclass(frozen=True)
class Clip:
    """Frames ``start..start+length-1`` of segment ``segment``."""

    segment: int
    start: int
    length: int


def cut_clips(footage: Footage, clip_len: int, held_out: bool, limit: int | None = None) -> list[Clip]:
    """Clips of up to ``clip_len`` frames in the training segments (overlapping by half a clip) or the held-out
    ones (one after the other); at most ``limit``, evenly spread."""
    clips = []
    for index, segment in enumerate(footage.segments):
        if segment.span.held_out != held_out:
            continue
        total = len(segment.frames)
        length = min(clip_len, total)
        step = max(1, length // 2) if not held_out else length
        starts = list(range(0, total - length + 1, step))
        if held_out and total - (starts[-1] + length) >= MIN_CLIP_FRAMES:
            starts.append(total - length)  # the rest of a held-out range, as one more (overlapping) clip
        clips += [Clip(index, s, length) for s in starts]
    if limit is not None and len(clips) > limit:
        picks = np.linspace(0, len(clips) - 1, limit).round().astype(int)
        clips = [clips[i] for i in sorted(set(picks.tolist()))]
    return clips
