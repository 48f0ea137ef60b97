"""Evaluation sequences read from the official folder structures of the DepthCrafter video depth benchmark.

Each reader lists :class:`EvalSequence` objects: lazily read RGB frames (uint8 ``(H, W, 3)``), metric depth
(float64 ``(H, W)``, invalid pixels <= 0) and, where the dataset has them, normals and ground-truth flow. Frame
selection, depth decoding and crops are those of ``benchmark/dataset_extract/dataset_extract_*.py`` and
``benchmark/eval/eval.sh`` (``--seq_len``) in github.com/Tencent/DepthCrafter:

- ``kitti``: KITTI depth ``val`` (``data_depth_annotated/val/<seq>/proj_depth/groundtruth/image_02/*.png``,
  depth = png / 256, 0 = invalid) with the raw images ``<date>/<seq>/image_02/data/*.png``; first 110 frames;
  images and depth cropped to even height and width.
- ``scannet``: ScanNet v2 ``scans_test`` (``<scene>/color/<i>.jpg``, ``<scene>/depth/<i>.png``, depth = png / 1000);
  the first 100 scenes (sorted), frames ``[:270:3]`` (90), cropped ``[8:-8, 11:-11]``.
- ``bonn``: Bonn RGB-D Dynamic (``<seq>/rgb/*.png``, ``<seq>/depth/*.png``, depth = png / 5000, 0 = invalid);
  the five sequences of ``csv/meta_bonn.csv``, frames ``[30:140]`` (110), cropped to even size.
- ``sintel``: MPI Sintel training, clean pass (``training/clean/<scene>/frame_*.png``) with the depth archive
  (``training/depth/<scene>/frame_*.dpt``); first 50 frames.

A sequence whose files are incomplete (a missing frame, fewer ground-truth frames than RGB frames, a file of
the wrong shape) is still listed, with :attr:`EvalSequence.error` saying what is wrong, so that the evaluation can
report and skip it while scoring the others; a file found unreadable while evaluating raises InputError.

DepthCrafter sorts file names with a plain sort followed by a stable sort on the integer value of the last four
characters before the first dot; that order is kept. One deliberate difference: DepthCrafter re-encodes the frames
as an mp4 before inference, while here the original images are used (no compression loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bufferanytime.constants import (
    BONN_DEPTH_SCALE,
    BONN_FRAMES,
    BONN_SEQUENCES,
    EVAL_SEQ_LEN,
    KITTI_DEPTH_SCALE,
    KITTI_FRAMES,
    SCANNET_CROP,
    SCANNET_DEPTH_SCALE,
    SCANNET_FRAMES,
    SCANNET_NUM_SCENES,
    SCANNET_STRIDE,
    SINTEL_DPT_TAG,
)
from bufferanytime.errors import InputError
from bufferanytime.io.arrays import flows_from_disk
from bufferanytime.io.images import open_image, read_png_depth, read_rgb
from bufferanytime.registry import Registry

DPT_MAX_PIXELS = 100_000_000  # sanity bound on the size read from a .dpt header (as in the official reader)

Crop = tuple[slice, slice]


@dataclass
class EvalSequence:
    """One evaluation video: frame readers by index; nothing is read until asked for.

    ``read_rgb(i)`` -> uint8 ``(H, W, 3)``; ``read_depth(i)`` -> float64 metric depth ``(H, W)`` (<= 0 where
    unknown); ``read_normal(i)`` -> float32 unit normals ``(H, W, 3)`` (camera coordinates, x right, y up, z
    towards the camera); ``gt_flows()`` -> ``(fwd, bwd, valid_fwd, valid_bwd)``, flows ``(T-1, 2, H, W)``.
    ``error``: why the sequence cannot be evaluated (found when listing it), or None.
    """

    name: str
    num_frames: int
    read_rgb: Callable[[int], np.ndarray]
    read_depth: Callable[[int], np.ndarray] | None = None
    read_normal: Callable[[int], np.ndarray] | None = None
    gt_flows: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None
    info: dict = field(default_factory=dict)
    error: str | None = None
    read_moving: Callable[[int], np.ndarray] | None = None  # bool (H, W): objects moving on their own (synthetic)

    def frames(self) -> Iterator[np.ndarray]:
        """The RGB frames in order; InputError when one differs in size from the first."""
        first = None
        for i in range(self.num_frames):
            frame = self.read_rgb(i)
            first = frame.shape if first is None else first
            if frame.shape != first:
                raise InputError(f"RGB frame {i} is {frame.shape[1]}x{frame.shape[0]} px, frame 0 is "
                                 f"{first[1]}x{first[0]} px")
            yield frame

    def truncated(self, max_frames: int | None) -> EvalSequence:
        """The same sequence limited to its first ``max_frames`` frames."""
        if max_frames is None or max_frames >= self.num_frames:
            return self
        flows = self.gt_flows
        if flows is not None:
            full = flows

            def flows() -> tuple[np.ndarray, ...]:
                return tuple(a[: max_frames - 1] for a in full())

        return EvalSequence(self.name, max_frames, self.read_rgb, self.read_depth, self.read_normal, flows,
                            dict(self.info), self.error, self.read_moving)


# -- file formats ----------------------------------------------------------------------------------------------
def read_dpt(path: str | Path) -> np.ndarray:
    """Read a Sintel ``.dpt`` depth file: float32 tag 202021.25, int32 width, int32 height, float32 depth rows."""
    with open(path, "rb") as f:
        tag = np.fromfile(f, dtype="<f4", count=1)
        width = np.fromfile(f, dtype="<i4", count=1)
        height = np.fromfile(f, dtype="<i4", count=1)
        if tag.size != 1 or tag[0] != np.float32(SINTEL_DPT_TAG) or width.size != 1 or height.size != 1:
            raise InputError(f"{path}: not a Sintel .dpt depth file (wrong tag)")
        w, h = int(width[0]), int(height[0])
        if w <= 0 or h <= 0 or w * h > DPT_MAX_PIXELS:
            raise InputError(f"{path}: invalid .dpt size {w}x{h}")
        depth = np.fromfile(f, dtype="<f4", count=w * h)
        extra = len(f.read(1))
    if depth.size != w * h:
        raise InputError(f"{path}: truncated .dpt file ({depth.size} of {w * h} values)")
    if extra:
        raise InputError(f"{path}: data beyond the {w}x{h} values its header gives (a damaged .dpt file)")
    return depth.reshape(h, w)


def write_dpt(path: str | Path, depth: np.ndarray) -> None:
    """Write ``depth`` ``(H, W)`` as a Sintel ``.dpt`` file (the inverse of :func:`read_dpt`)."""
    depth = np.asarray(depth, dtype="<f4")
    h, w = depth.shape
    with open(path, "wb") as f:
        np.array([SINTEL_DPT_TAG], "<f4").tofile(f)
        np.array([w, h], "<i4").tofile(f)
        depth.tofile(f)


def benchmark_sort(names: list[str]) -> list[str]:
    """DepthCrafter's frame order: ``sorted`` then a stable sort on ``int(name.split('.')[0][-4:])``."""
    return sorted(sorted(names), key=lambda x: int(x.split(".")[0][-4:]))


def _list(folder: Path, suffix: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(suffix)] if folder.is_dir() else []


def _even_crop(shape: tuple[int, ...]) -> Crop:
    return slice(0, shape[0] - shape[0] % 2), slice(0, shape[1] - shape[1] % 2)


def _file_sequence(
    name: str,
    rgb_paths: list[Path],
    depth_paths: list[Path],
    depth_reader: Callable[[Path], np.ndarray],
    crop: Callable[[tuple[int, ...]], Crop],
    info: dict,
    error: str | None = None,
) -> EvalSequence:
    def rgb(i: int) -> np.ndarray:
        return _cropped(rgb_paths[i], read_rgb(rgb_paths[i]), crop)

    def depth(i: int) -> np.ndarray:
        return _cropped(depth_paths[i], depth_reader(depth_paths[i]), crop)

    if error is None:
        missing = [p for p in (*rgb_paths, *depth_paths) if not p.is_file()]
        error = f"{missing[0]}: missing file ({len(missing)} missing in this sequence)" if missing else None
    return EvalSequence(name, len(rgb_paths), rgb, depth, info=info, error=error)


def _cropped(path: Path, image: np.ndarray, crop: Callable[[tuple[int, ...]], Crop]) -> np.ndarray:
    """The dataset's crop of an image read from ``path``; InputError when nothing of it is left."""
    out = image[crop(image.shape)]
    if not out.size:
        raise InputError(f"{path}: {image.shape[1]}x{image.shape[0]} px is too small for this dataset's crop")
    return np.ascontiguousarray(out)


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _need(found: Path | None, root: Path, dataset: str, layout: str) -> Path:
    if found is None:
        raise InputError(f"{root}: not a {dataset} folder (expected {layout})")
    return found


# -- readers ---------------------------------------------------------------------------------------------------
def kitti_sequences(root: str | Path) -> list[EvalSequence]:
    """KITTI depth val: ``ROOT/data_depth_annotated/val`` (or ``ROOT/val``) and the raw data in ``ROOT/raw_data``
    (or ``ROOT``), i.e. ``<raw>/<date>/<seq>/image_02/data/<frame>.png``."""
    root = Path(root)
    depth_root = _need(_first_dir(root / "data_depth_annotated" / "val", root / "val"), root, "KITTI",
                       "data_depth_annotated/val/<seq>/proj_depth/groundtruth/image_02")
    raw_root = _first_dir(root / "raw_data", root / "raw") or root
    start, end = KITTI_FRAMES
    sequences = []
    for seq_dir in sorted(p for p in depth_root.iterdir() if p.is_dir()):
        gt_dir = seq_dir / "proj_depth" / "groundtruth" / "image_02"
        names = benchmark_sort(_list(gt_dir, ".png"))[start:end][: EVAL_SEQ_LEN["kitti"]]
        if not names:
            continue
        image_dir = raw_root / seq_dir.name[:10] / seq_dir.name / "image_02" / "data"
        rgb = [image_dir / n for n in names]
        sequences.append(_file_sequence(
            seq_dir.name, rgb, [gt_dir / n for n in names],
            lambda p: read_png_depth(p, KITTI_DEPTH_SCALE), _even_crop, {"dataset": "kitti"},
        ))
    return sequences


def scannet_sequences(root: str | Path) -> list[EvalSequence]:
    """ScanNet v2 test scenes: ``ROOT/<scene>/color/<i>.jpg`` and ``ROOT/<scene>/depth/<i>.png`` (``ROOT`` is
    ``scans_test``, or a folder holding it)."""
    root = Path(root)
    base = root / "scans_test" if (root / "scans_test").is_dir() else root
    top, bottom, left, right = SCANNET_CROP
    crop = lambda shape: (slice(top, shape[0] - bottom), slice(left, shape[1] - right))  # noqa: E731
    scenes = sorted(p for p in base.iterdir() if (p / "color").is_dir()) if base.is_dir() else []
    sequences = []
    for scene in scenes[:SCANNET_NUM_SCENES]:
        names = sorted(_list(scene / "color", ".jpg"), key=lambda x: int(x.split(".")[0]))
        names = names[:SCANNET_FRAMES:SCANNET_STRIDE][: EVAL_SEQ_LEN["scannet"]]
        if not names:
            continue
        depth = [scene / "depth" / (n[:-3] + "png") for n in names]
        sequences.append(_file_sequence(
            scene.name, [scene / "color" / n for n in names], depth,
            lambda p: read_png_depth(p, SCANNET_DEPTH_SCALE, zero_invalid=False), crop, {"dataset": "scannet"},
        ))
    if not sequences:
        raise InputError(f"{root}: no ScanNet scenes (expected <scene>/color/<i>.jpg and <scene>/depth/<i>.png)")
    return sequences


def bonn_sequences(root: str | Path) -> list[EvalSequence]:
    """Bonn RGB-D Dynamic: ``ROOT/<seq>/rgb/*.png`` and ``ROOT/<seq>/depth/*.png``. The benchmark's five sequences
    are used when present (a folder without any of them is evaluated whole, and the report says so)."""
    root = Path(root)
    present = sorted(p.name for p in root.iterdir() if (p / "rgb").is_dir() and (p / "depth").is_dir()) \
        if root.is_dir() else []
    official = [s for s in BONN_SEQUENCES if s in present]
    names = official or present
    start, end = BONN_FRAMES
    sequences = []
    for seq in names:
        rgb = benchmark_sort(_list(root / seq / "rgb", ".png"))[start:end][: EVAL_SEQ_LEN["bonn"]]
        depth = benchmark_sort(_list(root / seq / "depth", ".png"))[start:end][: EVAL_SEQ_LEN["bonn"]]
        if not rgb:
            continue
        error = None
        if len(rgb) != len(depth):
            error = f"{root / seq}: {len(rgb)} rgb but {len(depth)} depth frames in [{start}:{end}]"
        sequences.append(_file_sequence(
            seq, [root / seq / "rgb" / n for n in rgb], [root / seq / "depth" / n for n in depth],
            lambda p: read_png_depth(p, BONN_DEPTH_SCALE), _even_crop,
            {"dataset": "bonn", "official_sequence": seq in BONN_SEQUENCES}, error,
        ))
    if not sequences:
        raise InputError(f"{root}: no Bonn sequences (expected <seq>/rgb/*.png and <seq>/depth/*.png)")
    return sequences


def sintel_sequences(root: str | Path) -> list[EvalSequence]:
    """MPI Sintel training, clean pass: ``ROOT/training/clean/<scene>/*.png`` with ``ROOT/training/depth/<scene>/
    *.dpt`` (the depth archive unpacked into the same root; ``ROOT/clean`` + ``ROOT/depth`` also work)."""
    root = Path(root)
    clean = _need(_first_dir(root / "training" / "clean", root / "clean"), root, "Sintel", "training/clean/<scene>")
    depth_root = _need(
        _first_dir(root / "training" / "depth", root / "depth",
                   root / "MPI-Sintel-depth-training-20150305" / "training" / "depth"),
        root, "Sintel", "training/depth/<scene>/*.dpt",
    )
    no_crop = lambda shape: (slice(None), slice(None))  # noqa: E731
    sequences = []
    for scene in sorted(p for p in clean.iterdir() if p.is_dir()):
        names = benchmark_sort(_list(scene, ".png"))[: EVAL_SEQ_LEN["sintel"]]
        if not names:
            continue
        depth = [depth_root / scene.name / (n[:-3] + "dpt") for n in names]
        sequences.append(_file_sequence(scene.name, [scene / n for n in names], depth, read_dpt, no_crop,
                                        {"dataset": "sintel"}))
    return sequences


def synthetic_sequences(root: str | Path) -> list[EvalSequence]:
    """Videos written by ``bufferanytime synth`` (:class:`bufferanytime.synthetic.SyntheticVideoDataset`), with
    exact depth, normals and ground-truth flow (read through memory maps, one frame at a time)."""
    from bufferanytime.synthetic import SyntheticVideoDataset

    dataset = SyntheticVideoDataset(root)
    return [_synthetic_sequence(dataset, i) for i in range(len(dataset))]


def _load_array(file: Path) -> np.ndarray:
    """A ``.npy`` file as a memory map; InputError if it is missing, truncated or not an array file."""
    try:
        return np.load(file, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        raise InputError(f"{file}: not a readable .npy array ({type(exc).__name__})") from exc


# Synthetic arrays: name -> (frames relative to the RGB frames, trailing channel shape).
SYNTHETIC_SHAPES = {"depth": (0, ()), "normal": (0, (3,)), "flow_fwd": (-1, (2,)), "flow_bwd": (-1, (2,)),
                    "flow_valid_fwd": (-1, ()), "flow_valid_bwd": (-1, ())}


def _synthetic_problem(folder: Path, num_frames: int) -> str | None:
    """What makes a synthetic video folder unusable (missing frames; arrays of the wrong length, of another frame
    size than the RGB frames, or not of numbers), or None."""
    frames = sorted((folder / "rgb").glob("*.png"))
    if not frames:
        return f"{folder / 'rgb'}: no frames"
    if len(frames) != num_frames:
        return f"{folder / 'rgb'}: {len(frames)} frames but meta.json says {num_frames}"
    try:
        with open_image(frames[0]) as first:
            size = (first.height, first.width)
    except InputError as exc:
        return str(exc)
    for name, (offset, channels) in SYNTHETIC_SHAPES.items():
        try:
            array = _load_array(folder / f"{name}.npy")
        except InputError as exc:
            return str(exc)
        shape = array.shape
        if len(shape) != 3 + len(channels) or shape[0] != num_frames + offset or shape[3:] != channels:
            return f"{folder / name}.npy: shape {shape}, expected {num_frames + offset} frames of (H, W, *{channels})"
        if array.dtype.kind not in "biuf":
            return f"{folder / name}.npy: dtype {array.dtype}, expected numbers"
        if shape[1:3] != size:
            return f"{folder / name}.npy: frames of {shape[2]}x{shape[1]} px, the RGB frames are {size[1]}x{size[0]} px"
    return None


def _synthetic_sequence(dataset, index: int) -> EvalSequence:
    folder = dataset.paths[index]
    try:
        num_frames = int(dataset.meta(index)["num_frames"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return EvalSequence(dataset.names[index], 0, _no_frames,
                            error=f"{folder / 'meta.json'}: unreadable ({type(exc).__name__})")

    def array(name: str) -> np.ndarray:
        return _load_array(folder / f"{name}.npy")

    def flows() -> tuple[np.ndarray, ...]:
        fwd, bwd = (flows_from_disk(array(n)) for n in ("flow_fwd", "flow_bwd"))
        return fwd, bwd, array("flow_valid_fwd"), array("flow_valid_bwd")

    return EvalSequence(
        dataset.names[index],
        num_frames,
        read_rgb=lambda i: dataset.frame(index, i),
        read_depth=lambda i: np.asarray(array("depth")[i], dtype=np.float64),
        read_normal=lambda i: np.asarray(array("normal")[i], dtype=np.float32),
        gt_flows=flows,
        info={"dataset": "synthetic", "intrinsics_file": str(folder / "meta.json")},  # the exact camera
        error=_synthetic_problem(folder, num_frames),
        read_moving=(lambda i: np.asarray(array("moving")[i], dtype=bool)) if (folder / "moving.npy").is_file()
        else None,  # folders written before the mask existed have none
    )


def _no_frames(i: int) -> np.ndarray:
    raise InputError(f"frame {i}: the sequence has no readable frames")


#: The benchmark readers, by dataset name: each lists the evaluation sequences under a root folder.
DATASETS: Registry[Callable[[str | Path], list[EvalSequence]]] = Registry("dataset")
DATASETS.register("synthetic", synthetic_sequences)
DATASETS.register("kitti", kitti_sequences)
DATASETS.register("scannet", scannet_sequences)
DATASETS.register("bonn", bonn_sequences)
DATASETS.register("sintel", sintel_sequences)


def list_datasets() -> list[str]:
    """Names ``load_sequences`` accepts."""
    return DATASETS.list()


def load_sequences(dataset: str, root: str | Path) -> list[EvalSequence]:
    """All evaluation sequences of ``dataset`` under ``root``, in a stable order; InputError if there are none."""
    reader = DATASETS.get(dataset)
    if not Path(root).is_dir():
        raise InputError(f"{root}: no such directory")
    sequences = reader(root)
    if not sequences:
        raise InputError(f"{root}: no {dataset} sequences found")
    return sequences
