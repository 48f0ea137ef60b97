"""Pinhole camera intrinsics from the command line: ``--intrinsics fx,fy,cx,cy``, ``--fov DEG`` or a file.

Files understood (:func:`read_intrinsics_file`):

- JSON with an ``"intrinsics"`` object holding ``fx, fy, cx, cy`` (the synthetic world's ``meta.json``, whose
  ``width``/``height`` give the size they refer to; also this tool's own ``depth.meta.json``);
- a KITTI-style calibration: lines ``LABEL: numbers``; a 3x4 projection ``P2:`` / ``P_rect_02:`` / ``P_rect_00:``
  (12 values) or a 3x3 ``K:`` / ``K_02:`` / ``K_00:`` (9 values), the first of these found in that order, with the
  size from the matching ``S_rect_0N:`` / ``S_0N:`` when present. This covers KITTI's object and odometry
  ``calib.txt``, KITTI raw's ``calib_cam_to_cam.txt`` (the left colour camera) and KITTI-360's
  ``perspective.txt`` (the rectified left camera, ``image_00``); other labels are used only when the file has a
  single 9- or 12-value line;
- a COLMAP ``cameras.txt`` (``ID MODEL WIDTH HEIGHT PARAMS...``): PINHOLE and SIMPLE_PINHOLE exactly; models with
  distortion (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV, ...) by their pinhole part, with a warning;
- a file of bare numbers, as ``numpy.loadtxt`` reads it: ``fx fy cx cy`` (DeepV2D's ``intrinsics.txt``: one value
  per line) or ``fx fy cx cy W H``, or a 3x3 / 3x4 / 4x4 camera matrix (``K``, ``P``, ScanNet's 4x4).

Pixel centres (:data:`PIXEL_CENTRES`): this tool (and the synthetic world, and COLMAP) puts the centre of pixel
(i, j) at (j + 0.5, i + 0.5), the ``colmap`` convention; OpenCV, KITTI and DeepV2D put it at (j, i), the
``opencv`` convention, whose ``cx, cy`` get + 0.5 here. Numbers on the command line are read as ``opencv``, each
file format by its own convention; ``--pixel-centres`` says otherwise for numbers and files alike. The
intrinsics are kept, and recorded in meta files, in this tool's convention, with the one they were given in.
Intrinsics that name the image size they were made for are scaled to the size of the frames (x and y apart).
Without any option: horizontal field of view :data:`DEFAULT_FOV_DEG`, square pixels, principal point at the
centre. Every value is checked when the options are parsed, before any model work.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from bufferanytime.errors import InputError

DEFAULT_FOV_DEG = 60.0  # horizontal field of view assumed when no intrinsics are given (a common phone/webcam lens)
OPENCV = "opencv"  # the centre of the top-left pixel is (0, 0): OpenCV, KITTI, DeepV2D
COLMAP = "colmap"  # the centre of the top-left pixel is (0.5, 0.5): COLMAP, this tool, the synthetic world
PIXEL_CENTRES = {OPENCV: 0.5, COLMAP: 0.0}  # what a convention's cx, cy need added to be in this tool's
DEFAULT_PIXEL_CENTRES = OPENCV  # for fx,fy,cx,cy given as numbers: the convention of most calibration tools
# KITTI-style labels in order of preference, each with the labels of the image size it refers to: KITTI's left
# colour camera (object/odometry calib.txt: P2; raw calib_cam_to_cam.txt: P_rect_02), then KITTI-360's rectified
# left camera (perspective.txt: P_rect_00), then bare or unrectified matrices.
KITTI_LABELS = {
    "P2": ("S_rect_02", "S_02"), "P_rect_02": ("S_rect_02",), "P_rect_00": ("S_rect_00",),
    "K": ("S_rect_02", "S_02"), "K_02": ("S_02",), "K_00": ("S_00",),
}
# COLMAP camera models: the indices of fx, fy, cx, cy in PARAMS (fx == fy for the single-focal models).
COLMAP_PINHOLE = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2), "PINHOLE": (0, 1, 2, 3), "SIMPLE_RADIAL": (0, 0, 1, 2), "RADIAL": (0, 0, 1, 2),
    "OPENCV": (0, 1, 2, 3), "FULL_OPENCV": (0, 1, 2, 3), "OPENCV_FISHEYE": (0, 1, 2, 3), "FOV": (0, 1, 2, 3),
    "SIMPLE_RADIAL_FISHEYE": (0, 0, 1, 2), "RADIAL_FISHEYE": (0, 0, 1, 2), "THIN_PRISM_FISHEYE": (0, 1, 2, 3),
}
COLMAP_EXACT = ("SIMPLE_PINHOLE", "PINHOLE")
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera in pixels; ``width``/``height``: the image size they refer to (None: any, as given)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int | None = None
    height: int | None = None
    source: str = ""
    given_pixel_centres: str | None = None  # the convention cx, cy were given in (None: not given, e.g. --fov)

    def for_size(self, height: int, width: int) -> Intrinsics:
        """The same camera for frames of ``height`` x ``width`` (scaled when made for another size)."""
        if self.width is None or self.height is None or (self.width, self.height) == (width, height):
            return replace(self, width=width, height=height)
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height,
                          f"{self.source}, scaled from {self.width}x{self.height} to {width}x{height}",
                          self.given_pixel_centres)

    def to_meta(self) -> dict:
        """The camera as meta files record it: ``cx, cy`` in this tool's convention (``pixel_centres``), and the
        convention they were given in, so a reader can tell what was asked for."""
        given = {"given_pixel_centres": self.given_pixel_centres} if self.given_pixel_centres else {}
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width,
                "height": self.height, "source": self.source, "pixel_centres": COLMAP, **given,
                "pixel_centres_note": "pixel (i, j) has its centre at (x, y) = (j + 0.5, i + 0.5) in these values"}

    def with_pixel_centres(self, convention: str) -> Intrinsics:
        """These values read as given in ``convention``, moved into this tool's (``opencv``: cx, cy + 0.5)."""
        offset = PIXEL_CENTRES[convention]
        return replace(self, cx=self.cx + offset, cy=self.cy + offset, given_pixel_centres=convention)


def fov_intrinsics(fov_deg: float, height: int, width: int, source: str) -> Intrinsics:
    """Square pixels, principal point at the image centre, horizontal field of view ``fov_deg``."""
    f = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    return Intrinsics(f, f, width / 2, height / 2, width, height, source)


@dataclass(frozen=True)
class IntrinsicsSpec:
    """The user's choice, resolved per video by :meth:`resolve`: fixed values, a field of view, or the default."""

    values: Intrinsics | None = None
    fov: float | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def given(self) -> bool:
        """Whether the user gave the camera (values or a field of view), rather than leaving it to the default."""
        return self.values is not None or self.fov is not None

    def resolve(self, height: int, width: int) -> Intrinsics:
        if self.values is not None:
            return self.values.for_size(height, width)
        if self.fov is not None:
            return fov_intrinsics(self.fov, height, width, f"--fov {self.fov:g}")
        return fov_intrinsics(DEFAULT_FOV_DEG, height, width, f"default fov {DEFAULT_FOV_DEG:g}")


def parse_intrinsics(intrinsics: str | None = None, fov: float | None = None,
                     pixel_centres: str | None = None) -> IntrinsicsSpec:
    """``--intrinsics`` (values or a file), ``--fov`` and ``--pixel-centres`` checked into an :class:`IntrinsicsSpec`.

    ``pixel_centres`` (``opencv`` or ``colmap``; None: numbers as ``opencv``, a file by its format's convention)
    says how to read ``cx, cy``; it does not matter for a field of view (the principal point is the image centre).
    InputError on any bad value or file.
    """
    if pixel_centres is not None and pixel_centres not in PIXEL_CENTRES:
        raise InputError(f"--pixel-centres must be one of {', '.join(PIXEL_CENTRES)}, got {pixel_centres!r}")
    if intrinsics is not None and fov is not None:
        raise InputError("give --intrinsics or --fov, not both")
    if fov is not None:
        if not (math.isfinite(fov) and 0.0 < fov < 180.0):
            raise InputError(f"--fov must be a horizontal field of view in degrees between 0 and 180, got {fov:g}")
        return IntrinsicsSpec(fov=float(fov))
    if intrinsics is None:
        return IntrinsicsSpec()
    parts = [p.strip() for p in intrinsics.split(",")]
    if all(NUMBER.match(p) for p in parts) and not Path(intrinsics).is_file():
        values = intrinsics_from_values([float(p) for p in parts], "--intrinsics")
        return IntrinsicsSpec(values=values.with_pixel_centres(pixel_centres or DEFAULT_PIXEL_CENTRES))
    values, warnings = read_intrinsics_file(intrinsics, pixel_centres)
    return IntrinsicsSpec(values=values, warnings=tuple(warnings))


def intrinsics_from_values(values: list[float], where: str) -> Intrinsics:
    """fx, fy, cx, cy (and optionally width, height) checked into :class:`Intrinsics`."""
    if len(values) not in (4, 6):
        raise InputError(f"{where}: expected 4 values fx,fy,cx,cy (or 6 with the width,height they refer to), got "
                         f"{len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{where}: values must be finite numbers")
    fx, fy, cx, cy = values[:4]
    if fx <= 0 or fy <= 0:
        raise InputError(f"{where}: focal lengths must be positive, got fx={fx:g}, fy={fy:g}")
    width = height = None
    if len(values) == 6:
        width, height = values[4], values[5]
        if width < 1 or height < 1 or width != int(width) or height != int(height):
            raise InputError(f"{where}: width and height must be positive whole numbers of pixels")
        width, height = int(width), int(height)
    label = ",".join(f"{v:g}" for v in values)
    return Intrinsics(fx, fy, cx, cy, width, height, f"{where} {label}")


def read_intrinsics_file(path: str | Path, pixel_centres: str | None = None) -> tuple[Intrinsics, list[str]]:
    """Intrinsics from a calibration file (the formats in this module's docstring), in this tool's pixel-centre
    convention, and the warnings to print; InputError when the file is missing, unreadable or not understood.

    ``pixel_centres`` overrides the format's own convention (with a warning when they differ).
    """
    where = f"--intrinsics {path}"
    values, warnings, native = _read_calibration(Path(path))
    if pixel_centres is not None and pixel_centres != native:
        warnings.append(f"warning: {where}: the format's cx, cy are {native} pixel centres; read as {pixel_centres} "
                        "as --pixel-centres says")
    return values.with_pixel_centres(pixel_centres or native), warnings


def _read_calibration(path: Path) -> tuple[Intrinsics, list[str], str]:
    """The file's values as written, its warnings, and the pixel-centre convention of its format."""
    if not path.exists():
        raise InputError(f"--intrinsics {path}: no such file, and not four numbers fx,fy,cx,cy")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--intrinsics {path}: cannot read the calibration file ({exc})") from exc
    for reader in (_json_intrinsics, _kitti_intrinsics, _colmap_intrinsics, _plain_intrinsics):
        found = reader(text, f"--intrinsics {path}")
        if found is not None:
            return found
    raise InputError(f"--intrinsics {path}: cannot parse it as a JSON meta file with 'intrinsics', a KITTI "
                     "calibration (P2:, P_rect_0N: or K: line), a COLMAP cameras.txt or bare numbers fx fy cx cy")


def _json_intrinsics(text: str, where: str) -> tuple[Intrinsics, list[str], str] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
        k = data["intrinsics"]
        values = [float(k[name]) for name in ("fx", "fy", "cx", "cy")]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{where}: JSON without a usable 'intrinsics' object with fx, fy, cx, cy ({exc})") from exc
    width, height = k.get("width", data.get("width")), k.get("height", data.get("height"))
    if width is not None and height is not None:
        values += [float(width), float(height)]
    recorded = k.get("pixel_centres")  # this tool's meta files say; the synthetic world's are COLMAP's
    native = recorded if isinstance(recorded, str) and recorded in PIXEL_CENTRES else COLMAP
    return replace(intrinsics_from_values(values, where), source=f"{where} (JSON)"), [], native


def _labelled_lines(text: str) -> dict[str, list[float]]:
    """``LABEL: n n n`` lines of a KITTI calibration file (lines of other forms are ignored)."""
    lines = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        label, sep, rest = line.partition(":")
        numbers = rest.split()
        if sep and label.strip() and numbers and all(NUMBER.match(n) for n in numbers):
            lines[label.strip()] = [float(n) for n in numbers]
    return lines


def _kitti_intrinsics(text: str, where: str) -> tuple[Intrinsics, list[str], str] | None:
    lines = _labelled_lines(text)
    if not lines:
        return None
    candidates = [(k, lines[k]) for k in KITTI_LABELS if k in lines]
    if not candidates:
        matrices = [(k, v) for k, v in lines.items() if len(v) in (9, 12)]
        candidates = matrices if len(matrices) == 1 else []
    if not candidates:
        raise InputError(f"{where}: a calibration without a {', '.join(f'{k}:' for k in KITTI_LABELS)} line")
    label, m = candidates[0]
    if len(m) not in (9, 12):
        raise InputError(f"{where}: {label}: expected 9 (3x3) or 12 (3x4) values, got {len(m)}")
    cols = len(m) // 3
    values = [m[0], m[cols + 1], m[2], m[cols + 2]]
    size = next((lines[k] for k in KITTI_LABELS.get(label, ()) if k in lines and len(lines[k]) == 2), None)
    values += [round(v) for v in size] if size else []
    return replace(intrinsics_from_values(values, f"{where}: {label}"), source=f"{where} (KITTI {label})"), [], OPENCV


def _colmap_intrinsics(text: str, where: str) -> tuple[Intrinsics, list[str], str] | None:
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not rows or not all(len(r) >= 4 and r[0].isdigit() and r[1] in COLMAP_PINHOLE for r in rows):
        return None
    camera_id, model, width, height, *params = rows[0]
    order = COLMAP_PINHOLE[model]
    try:
        values = [float(params[i]) for i in order] + [float(width), float(height)]
    except (IndexError, ValueError) as exc:
        raise InputError(f"{where}: COLMAP camera {camera_id} ({model}) has too few or bad parameters") from exc
    warnings = []
    if model not in COLMAP_EXACT:
        warnings.append(f"warning: {where}: COLMAP camera {camera_id} is {model}; only its pinhole part is used "
                        "(lens distortion ignored)")
    if len(rows) > 1:
        warnings.append(f"warning: {where}: {len(rows)} cameras; the first (id {camera_id}) is used")
    camera = f"camera {camera_id} {model}"
    found = replace(intrinsics_from_values(values, f"{where}: {camera}"), source=f"{where} (COLMAP {camera})")
    return found, warnings, COLMAP


def _plain_intrinsics(text: str, where: str) -> tuple[Intrinsics, list[str], str] | None:
    """Bare numbers: ``fx fy cx cy`` (DeepV2D's intrinsics.txt), ``fx fy cx cy W H``, or a 3x3, 3x4 or 4x4 matrix
    ``[[fx, s, cx, ...], [0, fy, cy, ...], [0, 0, 1, ...], ...]``; None when the file holds anything else."""
    tokens = re.split(r"[\s,]+", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    tokens = [t for t in tokens if t]
    if not tokens or not all(NUMBER.match(t) for t in tokens):
        return None
    m = [float(t) for t in tokens]
    if len(m) in (4, 6):
        return replace(intrinsics_from_values(m, where), source=f"{where} (fx fy cx cy)"), [], OPENCV
    cols = {9: 3, 12: 4, 16: 4}.get(len(m))
    if cols is None or m[cols] != 0 or m[2 * cols:2 * cols + 3] != [0, 0, 1]:
        raise InputError(f"{where}: bare numbers must be fx fy cx cy (or fx fy cx cy W H) or a 3x3, 3x4 or 4x4 "
                         f"camera matrix with rows (fx 0 cx), (0 fy cy), (0 0 1); got {len(m)} values")
    values = [m[0], m[cols + 1], m[2], m[cols + 2]]
    shape = f"{len(m) // cols}x{cols} matrix"
    return replace(intrinsics_from_values(values, f"{where}: {shape}"), source=f"{where} ({shape})"), [], OPENCV
