"""The base class of a task: everything that differs between kinds of buffer, with the shared parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from bufferanytime.io.outputs import write_image

PNG16_MAX = 65535


@dataclass(frozen=True)
class OutputNames:
    """File and folder names of a task's outputs in ``OUT/<stem>/``, all prefixed by the task's name."""

    npz: str
    key: str
    vis: str
    png16: str
    exr: str
    meta: str

    @classmethod
    def of(cls, name: str, key: str) -> OutputNames:
        return cls(f"{name}.npz", key, f"{name}_vis.mp4", f"{name}_png16", f"{name}_exr", f"{name}.meta.json")


@dataclass(frozen=True)
class Column:
    """One metric column of an evaluation report: key in the metrics dict, header, decimals."""

    key: str
    header: str
    digits: int


class Task:
    """What a kind of buffer is and does; subclasses fill in every attribute and method below.

    Memory layout: a frame is a channel-first tensor ``(C, H, W)`` (depth may also be ``(H, W)``), a window
    ``(T, C, H, W)``; on disk a frame is ``(H, W)`` when ``channels == 1``, else ``(H, W, C)``.
    """

    name: str  # the sub-command, the prefix of every output file
    gt_dtype: type  # dtype of the ground truth as evaluation stores it
    array_key: str  # the array's name inside ``<name>.npz``
    channels: int
    title: str  # report title, e.g. "Video depth"
    exr_channels: tuple[str, ...]
    columns: tuple[Column, ...]  # the evaluation report's table
    definitions: tuple[str, ...]  # how the report's accuracy metrics are defined
    opw_note: str  # how the buffer is normalised before OPW, in words
    window_note: str  # how sliding windows are joined (align_window, after_blend), in words
    units: str = ""  # what the values are, for the meta file ("" when unitless)
    alignments: tuple[str, ...] = ()  # the --align modes of evaluation (none: the task aligns nothing)
    default_align: str | None = None
    # Adapting a model (bufferanytime.adapt.guard): the distance to the prior a tolerance is taken of when the starting
    # model is closer than this (e.g. the prior itself), in the units of the task's distance to the prior.
    prior_distance_scale: float = 1.0
    # Whether the buffer is disparity (larger = nearer): ground-truth depth is compared as its reciprocal.
    disparity: bool = False
    # Whether the regularization also holds each training clip's overall scale to the prior's
    # (:meth:`clip_scale_loss`): the prior's output is then prepared for every frame of a clip, not one.
    clip_anchor: bool = False

    def clip_scale_loss(self, pred: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The clip-level scale term of the regularization, ``pred``/``prior`` ``(B, L, H, W)``; only for tasks
        with :attr:`clip_anchor` (a buffer with a scale of its own to keep)."""
        raise NotImplementedError(f"the {self.name} task has no clip-level scale")

    def prior_distance(self, pred: np.ndarray, prior: np.ndarray) -> float:
        """How far a model's frames ``pred`` are from the prior's ``prior`` (disk layout, ``(T, ...)``): the mean
        over frames of the task's regularization loss, in the units of :attr:`prior_distance_scale`."""
        values = [float(self.regularization_loss(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)),
                                                 torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))))
                  for p, q in zip(pred, prior, strict=True)]
        return float(np.mean(values))

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    @property
    def kind(self) -> str:
        """The model kind (and sub-command) whose models serve this task; a task of its own kind by default."""
        return self.name

    def check_align(self, align: str | None) -> str | None:
        """The evaluation alignment to use: ``align`` (default :attr:`default_align`); InputError if unsupported."""
        from bufferanytime.errors import InputError

        if align is None:
            return self.default_align
        if not self.alignments:
            raise InputError(f"--align does not apply to {self.name} (it has no scale to align)")
        if align not in self.alignments:
            raise InputError(f"--align {align} does not apply to {self.name}; choose from {', '.join(self.alignments)}")
        return align

    @property
    def files(self) -> OutputNames:
        return OutputNames.of(self.name, self.array_key)

    # --- layout: memory <-> disk ----------------------------------------------------------------------------
    def frame_to_disk(self, frame: torch.Tensor) -> np.ndarray:
        """A CPU tensor ``(C, H, W)`` -> float32 ``(H, W)`` or ``(H, W, C)``."""
        raise NotImplementedError

    def frame_from_disk(self, frame: np.ndarray) -> torch.Tensor:
        """float ``(H, W)`` or ``(H, W, C)`` -> a float32 tensor ``(C, H, W)``."""
        raise NotImplementedError

    # --- sliding windows and resizing -----------------------------------------------------------------------
    def align_window(self, new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Bring a new window's outputs into agreement with ``previous`` (the outputs on its first frames)."""
        return new

    def after_blend(self, frames: torch.Tensor) -> torch.Tensor:
        """Project blended frames ``(T, C, H, W)`` back onto valid values (e.g. unit vectors)."""
        return frames

    def resize(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A disk-layout frame resized (bilinear) to ``size = (H, W)``; unchanged when already that size."""
        if frame.shape[:2] == tuple(size):
            return frame
        return self.after_resize(cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))

    def after_resize(self, frame: np.ndarray) -> np.ndarray:
        return frame

    # --- consistency (OPW) ----------------------------------------------------------------------------------
    def opw_values(self, frame: np.ndarray) -> np.ndarray:
        """What OPW compares of a disk-layout frame, before :meth:`opw_normalization` (the frame itself)."""
        return frame

    def opw_normalization(self, frames: Sequence[np.ndarray] | np.ndarray) -> tuple[float, float]:
        """``(t, s)`` such that ``(frames - t) / s`` is what OPW compares; ``(0, 1)``: used as they are."""
        return 0.0, 1.0

    def aligned_opw_values(self, frame: np.ndarray, metrics: dict) -> np.ndarray:
        """:meth:`opw_values` of a predicted frame after the evaluation's alignment (the ``scale``/``shift`` that
        :meth:`score` put in ``metrics``): the ground truth's units, so that the two can be subtracted."""
        return self.opw_values(frame)

    # --- visualisation and encodings ------------------------------------------------------------------------
    def vis_range(self, frames: np.ndarray) -> tuple[float, float] | None:
        """One colour range for a whole video (None when the mapping is fixed)."""
        return None

    def to_rgb(self, frame: np.ndarray, value_range: tuple[float, float] | None,
               invalid: np.ndarray | None = None) -> np.ndarray:
        """A disk-layout frame (or a time slice) -> RGB uint8; NaN and ``invalid`` pixels are shown, not lost."""
        raise NotImplementedError

    def vis_info(self, value_range: tuple[float, float] | None) -> dict:
        """How the visualisation maps values to colours, for the meta file."""
        raise NotImplementedError

    def write_png16(self, frames: np.ndarray, folder: Path) -> dict:
        """16-bit PNGs ``folder/000000.png`` ...; returns how to decode them."""
        raise NotImplementedError

    def exr_planes(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        """The OpenEXR channels of one disk-layout frame."""
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if len(self.exr_channels) == 1:
            return {self.exr_channels[0]: frame}
        return {c: frame[..., j].copy() for j, c in enumerate(self.exr_channels)}

    # --- evaluation -----------------------------------------------------------------------------------------
    def headline(self, metrics: dict) -> str:
        """The main accuracy metrics in a few words, e.g. for the demo's table."""
        raise NotImplementedError

    def has_ground_truth(self, sequence) -> bool:
        """Whether an evaluation sequence carries this task's ground truth."""
        raise NotImplementedError

    def read_ground_truth(self, sequence, index: int) -> np.ndarray:
        raise NotImplementedError

    def depth_cap(self, dataset: str) -> float | None:
        """The depth cap of ``dataset`` that the metrics use (None: this task does not score depth)."""
        return None

    def score(self, pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], dataset: str,
              align: str | None = None) -> dict[str, float]:
        """Accuracy metrics of a predicted video at the ground truth's size, after ``align`` (see
        :meth:`check_align`)."""
        raise NotImplementedError

    def gt_slice_rgb(self, gt_slice: np.ndarray, dataset: str) -> tuple[np.ndarray, tuple[float, float] | None]:
        """The coloured ground-truth time slice and the colour range the models' slices share."""
        raise NotImplementedError

    def pred_slice_rgb(self, pred_slice: np.ndarray, metrics: dict, value_range: tuple[float, float] | None
                       ) -> np.ndarray:
        """A model's coloured time slice, as comparable to the ground truth's as its metrics allow."""
        return self.to_rgb(pred_slice, value_range)

    def report_lines(self, report: dict) -> list[str]:
        """Task-specific lines of the report's header."""
        return []


def write_png16_frames(folder: Path, images) -> None:
    """Write uint16 images (grey or RGB) as ``folder/000000.png`` ...; creates ``folder``."""
    folder.mkdir()
    for i, image in enumerate(images):
        write_image(folder / f"{i:06d}.png", image)
