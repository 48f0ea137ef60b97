"""Optical flow quality and speed on CPU: RAFT-small vs DIS vs zero flow.

1. Synthetic videos with exact flow (``bufferanytime.synthetic.render_video``): end-point error (EPE) of the
   forward flow on the pixels where the ground truth is valid, and seconds per frame pair. ``raft-small`` is
   the library default (frames upsampled to a short side of ``RAFT_MIN_SIDE`` first), ``raft-native`` the
   network at the input resolution.
2. The shared Sintel frames (no ground truth): photometric error ``|warp(I_{k+1}, fwd) - I_k|`` (RGB in [0, 1])
   on pixels that every method keeps in view, on pixels both real methods find cycle-consistent, away from
   image edges (where the stabilization loss looks) and on large motions, and the fraction of pixels that pass
   the forward-backward cycle check (tau = CYCLE_TAU), per method.

Checks the claims EPE(raft-small) < EPE(dis) < EPE(zero) and photometric(raft-small) < photometric(dis);
exits with 1 if one fails.

    python benchmarks/flow_epe.py [--videos 4 --frames 6 --size 192 256] [--weights PATH] [--sintel DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bufferanytime.constants import CYCLE_TAU, EDGE_MANHATTAN_RADIUS
from bufferanytime.flow import cycle_mask, get_flow_model, inside_mask, warp
from bufferanytime.losses import edge_keep_mask
from bufferanytime.synthetic import render_video

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def _tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def _zero_flow(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    return torch.zeros(src.shape[0], 2, *src.shape[-2:])


def _timed(model, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    flow = model(src, dst)
    return flow, time.perf_counter() - start


def synthetic_epe(models: dict, videos: int, frames: int, size: tuple[int, int]) -> dict[str, tuple[float, float]]:
    err = {name: [] for name in models}
    secs = {name: 0.0 for name in models}
    pairs = 0
    for seed in range(videos):
        video = render_video(seed, frames, size)
        rgb = _tensor(video.rgb)
        gt = torch.from_numpy(video.flow_fwd).permute(0, 3, 1, 2)
        valid = torch.from_numpy(video.flow_valid_fwd)
        pairs += rgb.shape[0] - 1
        for name, model in models.items():
            for k in range(rgb.shape[0] - 1):  # one pair at a time, as a streaming user would
                flow, dt = _timed(model, rgb[k : k + 1], rgb[k + 1 : k + 2])
                secs[name] += dt
                epe = (flow[0] - gt[k]).norm(dim=0)
                err[name].append(epe[valid[k]])
        print(f"  video {seed}: {video.scene_kind}, mean |gt flow| {gt.norm(dim=1)[valid].mean():.2f} px")
    return {name: (float(torch.cat(err[name]).mean()), secs[name] / pairs) for name in models}


def _read_frames(folder: Path) -> torch.Tensor:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    return _tensor(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]))


LARGE_MOTION_PX = 10.0  # "large motion" pixels of the Sintel breakdown, by raft-small's flow magnitude


def sintel_photometric(models: dict, folder: Path) -> dict[str, tuple[float, ...]]:
    """Per method: photometric error on pixels in view for all methods, on pixels that both real methods find
    cycle-consistent (where a stabilization loss would use them), away from image edges, and on large motions,
    then the method's cycle-consistent fraction."""
    rgb = _read_frames(folder)
    src, dst = rgb[:-1], rgb[1:]
    fwd_flows, cycle = {}, {}
    for name, model in models.items():
        fwd = torch.cat([model(src[i : i + 1], dst[i : i + 1]) for i in range(src.shape[0])])
        bwd = torch.cat([model(dst[i : i + 1], src[i : i + 1]) for i in range(src.shape[0])])
        fwd_flows[name], cycle[name] = fwd, cycle_mask(fwd, bwd, CYCLE_TAU)
    in_view = torch.stack([inside_mask(f) for f in fwd_flows.values()]).all(dim=0)
    trusted = torch.stack([cycle["raft-small"], cycle["dis"]]).all(dim=0)
    # Where the stabilization loss looks: away from image edges (its edge mask uses the same Canny distance).
    away = in_view & edge_keep_mask(src)
    large = in_view & (fwd_flows["raft-small"].norm(dim=1) > LARGE_MOTION_PX)
    out = {}
    for name, fwd in fwd_flows.items():
        photo = (warp(dst, fwd) - src).abs().mean(dim=1)
        out[name] = tuple(float(photo[m].mean()) for m in (in_view, trusted, away, large)) + (
            float(cycle[name].float().mean()),
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "raft-small.pth")
    parser.add_argument("--sintel", type=Path, default=SHARED / "data" / "frames" / "sintel_market")
    parser.add_argument("--iters", type=int, default=12)
    args = parser.parse_args()

    models = {
        "raft-small": get_flow_model("raft-small", weights=args.weights, iters=args.iters),
        # the network at the input resolution, as the official code runs it (no upsampling of small frames)
        "raft-native": get_flow_model("raft-small", weights=args.weights, iters=args.iters, min_side=0),
        "dis": get_flow_model("dis"),
        "zero": _zero_flow,
    }
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"synthetic: {args.videos} videos x {args.frames - 1} pairs at {args.size[0]}x{args.size[1]}")
    syn = synthetic_epe(models, args.videos, args.frames, tuple(args.size))
    print(f"{'method':<12}{'EPE (px)':>10}{'s/pair':>10}{'EPE / zero':>12}")
    for name, (epe, spp) in syn.items():
        print(f"{name:<12}{epe:>10.3f}{spp:>10.3f}{epe / syn['zero'][0]:>12.3f}")
    ok = syn["raft-small"][0] < syn["dis"][0] < syn["zero"][0]
    print(f"claim EPE raft-small < dis < zero: {'PASS' if ok else 'FAIL'}")

    if args.sintel.is_dir():
        sin = sintel_photometric(models, args.sintel)
        print(f"\nSintel {args.sintel.name}: photometric error |warp(I_k+1, fwd) - I_k| (RGB in [0, 1])")
        print("  in view: pixels whose target is inside the next frame for every method;")
        print("  trusted: pixels that pass the cycle check for both raft-small and dis")
        print(f"  no edges: in view and beyond Manhattan distance {EDGE_MANHATTAN_RADIUS} of a Canny edge of the frame")
        print(f"  large: in view, raft-small flow > {LARGE_MOTION_PX:.0f} px")
        header = ["in view", "trusted", "no edges", "large", "cycle-ok", "in view / dis"]
        print(f"{'method':<12}" + "".join(f"{h:>{max(9, len(h) + 1)}}" for h in header))
        for name, (photo, trusted, away, large, cyc) in sin.items():
            print(
                f"{name:<12}{photo:>9.4f}{trusted:>9.4f}{away:>9.4f}{large:>9.4f}{cyc:>9.3f}"
                f"{photo / sin['dis'][0]:>14.3f}"
            )
        photo_ok = sin["raft-small"][0] < sin["dis"][0]
        print(f"claim photometric raft-small < dis: {'PASS' if photo_ok else 'FAIL'}")
        ok &= photo_ok
    else:
        print(f"\nSintel frames not found at {args.sintel}: skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
