"""``bufferanytime flow``: forward and backward optical flow of a video, saved as npz plus a colour-wheel video.

Writes ``OUT/<stem>/flow.npz`` with ``fwd`` (flow frame t -> t+1) and ``bwd`` (frame t+1 -> t), each
``(T-1, H, W, 2)`` float32 in pixels (x right, y down; ``frame_t(p)`` matches ``frame_{t+1}(p + fwd[t](p))``),
and ``OUT/<stem>/flow.mp4``, the forward flows in the Middlebury colour wheel with one magnitude scale for the
whole clip (its largest forward-flow magnitude), so colours are comparable across frames.

Frames are streamed: only two frames are decoded at a time; flows go to disk as they are computed. Only
``flow.npz`` and ``flow.mp4`` are replaced in ``OUT/<stem>/``: depth or normal outputs next to them, and anything
else there, are kept.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from bufferanytime.cli.args import check_device, check_outside_input, non_negative_int, positive_int
from bufferanytime.errors import InputError
from bufferanytime.flow import FLOW_MODELS, RAFT_MIN_SIDE, flow_to_color, get_flow_model
from bufferanytime.flow.raft_small import DEFAULT_ITERS
from bufferanytime.io import NpyStreamWriter, open_video, write_video
from bufferanytime.io.arrays import flows_to_disk, frames_to_tensor
from bufferanytime.io.outputs import OutputFiles, check_output_root, write_npz
from bufferanytime.io.video import VIS_CODEC_OPTIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flow",
        help="estimate forward/backward optical flow of a video (npz + colour-wheel mp4)",
        description="Estimate optical flow between consecutive frames of a video file or image folder. "
        "Writes OUT/<stem>/flow.npz (arrays fwd and bwd, each (T-1, H, W, 2) float32 in pixels, x right, "
        "y down) and OUT/<stem>/flow.mp4 (forward flow in the Middlebury colour wheel).",
    )
    parser.add_argument("input", help="video file or folder of frames")
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument("--method", choices=list(FLOW_MODELS), default="raft-small", help="flow estimator")
    parser.add_argument(
        "--flow-weights", default=None, help="path to the official RAFT-small checkpoint (raft-small.pth)"
    )
    parser.add_argument("--iters", type=positive_int, default=DEFAULT_ITERS, help="RAFT refinement iterations")
    parser.add_argument(
        "--raft-min-side",
        type=non_negative_int,
        default=RAFT_MIN_SIDE,
        help="upsample frames whose short side is smaller to this before RAFT (0: native resolution)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for RAFT: cpu (default), cuda, cuda:N, mps")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="use at most this many frames")
    parser.add_argument("--stride", type=positive_int, default=1, help="use every N-th frame")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_device(args.device)
    source = open_video(args.input, max_frames=args.max_frames, stride=args.stride)
    if source.kind == "image":
        raise InputError(f"{args.input}: flow needs at least two frames (a video or a folder of frames)")
    kwargs = {}
    if args.method == "raft-small":
        kwargs = {
            "weights": args.flow_weights,
            "iters": args.iters,
            "device": args.device,
            "min_side": args.raft_min_side,
        }
    model = get_flow_model(args.method, **kwargs)
    target = check_outside_input(source, check_output_root(args.output) / source.name)

    with OutputFiles(target) as tmp:
        fwd = NpyStreamWriter(tmp / "fwd.raw")
        bwd = NpyStreamWriter(tmp / "bwd.raw")
        max_magnitude = 0.0
        prev = None
        total = max(source.expected_frames - 1, 0) or None
        with tqdm(total=total, desc=f"flow {source.name}", unit="pair") as bar:
            for frame in source:
                cur = frames_to_tensor([frame])
                if prev is not None:
                    flows = model(torch.cat([prev, cur]), torch.cat([cur, prev]))
                    f, b = flows_to_disk(flows.cpu())
                    fwd.append(f)
                    bwd.append(b)
                    max_magnitude = max(max_magnitude, float(np.hypot(f[..., 0], f[..., 1]).max()))
                    bar.update(1)
                prev = cur
        if fwd.count == 0:
            raise InputError(f"{args.input}: flow needs at least two frames, got {1 if prev is not None else 0}")
        write_npz(tmp / "flow.npz", {"fwd": fwd, "bwd": bwd})
        flows_fwd = fwd.read()
        write_video(tmp / "flow.mp4", (flow_to_color(f, max_magnitude) for f in flows_fwd), fps=source.fps,
                    codec_options=VIS_CODEC_OPTIONS)
        del flows_fwd
        (tmp / "fwd.raw").unlink()
        (tmp / "bwd.raw").unlink()
    print(f"wrote {target / 'flow.npz'} ({fwd.count} pairs) and flow.mp4")
    return 0
