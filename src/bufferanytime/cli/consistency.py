"""``bufferanytime consistency OUT/<name>...``: do the depth and the normals predicted for one video agree?

For each folder holding the outputs of ``bufferanytime depth`` and ``bufferanytime normal`` of one input, the angle
between the normals implied by the depth (unprojected with the camera intrinsics) and the predicted normals, per
frame and over time (:mod:`bufferanytime.geometry.consistency`). One line per folder and depth buffer on stdout;
``-o FILE.json`` also writes every per-frame angle. Nothing is written into the output folders.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from bufferanytime.cli.args import finite_float, positive_float
from bufferanytime.errors import InputError
from bufferanytime.geometry.intrinsics import PIXEL_CENTRES, parse_intrinsics

MAX_FOOTPRINT = 32  # as bufferanytime.geometry.consistency.MAX_FOOTPRINT (not imported: the parser stays light)

DESCRIPTION = ("Depth-normal consistency of the outputs of one input: the angle between the normals implied by the "
               "predicted depth (unprojected with the camera intrinsics) and the predicted normals, per frame (mean "
               "over the pixels off depth discontinuities), its mean over frames and its std over frames. Relative "
               "depth is taken as 1 / disparity (zero shift assumed; the scale does not matter).")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("consistency", help="angle between the normals implied by the depth and the predicted normals",
                       description=DESCRIPTION)
    p.add_argument("folders", nargs="+", metavar="OUT/NAME",
                   help="output folder of one input holding depth.npz (or metric_depth.npz) and normal.npz")
    p.add_argument("--intrinsics", metavar="VALUES|FILE", default=None,
                   help="camera as for `bufferanytime depth` (default: the intrinsics recorded in the depth run's "
                   "meta file, else a 60 degree horizontal field of view)")
    p.add_argument("--pixel-centres", "--pixel-centers", dest="pixel_centres", choices=tuple(PIXEL_CENTRES),
                   default=None, help="how to read the cx, cy of --intrinsics, as for `bufferanytime depth`")
    p.add_argument("--fov", type=finite_float, metavar="DEG", default=None, help="horizontal field of view, degrees")
    p.add_argument("--edge-rtol", type=positive_float, metavar="R", default=None,
                   help="depth jumps above R (relative) to a neighbour are discontinuities, left out (default 0.05)")
    p.add_argument("--footprint", type=int, metavar="R", default=0,
                   help="0 (default): normals from central differences of neighbouring pixels, for predicted depth; "
                   "R >= 1: from least-squares planes over (2R+1)x(2R+1) pixels, for a sensor's depth (quantised "
                   "and noisy: central differences give tens of degrees there; R = 8 at 240x320 brings Kinect-like "
                   "depth within about 3 degrees of its exact normals, see docs/evaluation.md); at most "
                   f"{MAX_FOOTPRINT}")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE.json",
                   help="also write every result, with the per-frame angles, to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bufferanytime.geometry.consistency import CONSISTENCY_EDGE_RTOL, output_consistency

    if not 0 <= args.footprint <= MAX_FOOTPRINT:
        raise InputError(f"--footprint must be 0 to {MAX_FOOTPRINT} pixels, got {args.footprint}")
    given = args.intrinsics is not None or args.fov is not None
    spec = parse_intrinsics(args.intrinsics, args.fov, args.pixel_centres) if given else None
    for warning in spec.warnings if spec else ():
        print(warning, file=sys.stderr)
    if args.output is not None and args.output.is_dir():
        raise InputError(f"{args.output}: is a folder; -o takes a JSON file name")
    report, failures = {}, 0
    for folder in args.folders:
        try:
            _check_folder(Path(folder))
            results = output_consistency(Path(folder), spec, args.edge_rtol or CONSISTENCY_EDGE_RTOL, args.footprint)
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        report[folder] = results
        for name, r in results.items():
            print(f"{folder}: {name} vs normal.npz: {r['mean_deg']:.2f} deg mean over {len(r['per_frame_deg'])} "
                  f"frames, std over frames {r['std_over_frames_deg']:.2f} deg, {100 * r['compared_fraction']:.0f}% "
                  f"of pixels compared ({r['derivative']}); camera: {r['intrinsics']['source']}")
    if report and args.output is not None:
        from bufferanytime.io.atomic import write_text_atomic

        write_text_atomic(args.output, json.dumps(_finite(report), indent=1) + "\n")
    if not failures:
        return 0
    return 2 if not report else 1


def _check_folder(folder: Path) -> None:
    """InputError when ``folder`` is missing or not a folder (rather than a missing buffer inside it)."""
    if not folder.exists():
        raise InputError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the output folder of one input (OUT/NAME)")


def _finite(obj):
    """JSON has no NaN: undefined angles (a frame without a comparable pixel) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
