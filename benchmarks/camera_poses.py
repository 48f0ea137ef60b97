"""Camera poses (``depth --save poses``) on held-out synthetic videos, whose cameras, intrinsics and depth are exact.

Seeds from ``--seed`` (default 50000; the solver's settings were chosen on seeds below 50000), ``--videos`` clips
of ``--frames`` frames at ``--size``. Printed as markdown tables:

(a) the solver on the exact depth and flow: rotation error per frame (RPE, degrees), ATE after a similarity
    alignment (% of the trajectory's length), focal-length error when estimated; with the exact focal length too;
(b) the solver on predicted depth (relative disparity, depth = s / disparity) and Lucas-Kanade point tracks of
    the frames, as ``depth --save poses`` computes them: the embedded video model against its per-frame prior
    (``--per-frame``), ATE, RPE (translation in % of the mean true step, rotation in degrees per frame) and focal error;
(c) the cost: ``depth --save npz,poses`` against ``depth --save npz`` on the default embedded model (wall clock
    of the whole run, in process after one warm-up run; the two sides alternate ``--repeats`` times, so that a
    machine busy with other work slows both alike; the median of the per-repeat ratios), and the ratio of their CPU
    seconds; ``--one-thread`` runs torch and OpenCV on one thread (start it with OMP_NUM_THREADS=1
    OPENBLAS_NUM_THREADS=1), whose CPU seconds hardly depend on other work on the machine. ``--cost-only``: (c)
    alone.

    python benchmarks/camera_poses.py [--videos 6] [--frames 48] [--size 120x160] [--seed 50000] [--repeats 5]
                                      [--cost-only] [--one-thread]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bufferanytime.geometry.camera import solve_cameras, solve_tracks
from bufferanytime.geometry.camera_metrics import trajectory_errors
from bufferanytime.geometry.camera_outputs import CAMERA_SIDE
from bufferanytime.geometry.intrinsics import Intrinsics
from bufferanytime.geometry.tracks import FrameTracker, Tracks
from bufferanytime.geometry.unproject import relative_depth, relative_depth_scale
from bufferanytime.synthetic import render_video, write_video_dir

KEYS = ("rpe_rot_deg_per_frame", "ate_pct_of_length", "rpe_trans_pct_of_step")


def exact_intrinsics(video) -> Intrinsics:
    k = video.intrinsics
    height, width = video.size
    return Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], width, height, "exact")


def summary(track, video) -> dict:
    errors = trajectory_errors(track.poses, np.stack(video.poses))
    errors["focal_pct"] = 100 * abs(track.intrinsics.fx / video.intrinsics["fx"] - 1)
    errors["lost"] = int((~track.tracked).sum())
    return errors


def frame_tracks(rgb: np.ndarray) -> Tracks:
    """Point tracks of the frames, as the pipeline computes them."""
    tracker = FrameTracker(*rgb.shape[1:3])
    for frame in rgb:
        tracker.add(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    return tracker.tracks


def predicted_depth(model, rgb: np.ndarray) -> np.ndarray:
    from bufferanytime.inference.pipeline import InferenceSettings, predict_frames

    disparity = np.stack(list(predict_frames(model, iter(rgb), InferenceSettings(device="cpu"))))
    return np.stack([relative_depth(d, relative_depth_scale(disparity, 1.0)) for d in disparity])


def table(title: str, rows: dict[str, list[dict]], keys: tuple[str, ...]) -> None:
    print(f"\n{title}\n\n| depth | " + " | ".join(keys) + " | lost frames |")
    print("|---|" + "---|" * (len(keys) + 1))
    for name, results in rows.items():
        means = [np.nanmean([r[k] for r in results]) for k in keys]
        print(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) + f" | {sum(r['lost'] for r in results)} |")


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cost(video_dir: Path, repeats: int) -> tuple[float, float, float, float, float]:
    """Median wall-clock seconds of ``depth --save npz`` and ``--save npz,poses`` on one clip, alternated, the
    median of their per-repeat ratios, the median camera part, and the ratio of the two sides' CPU seconds (all
    threads of the process: less sensitive than the wall clock to other work on the machine)."""
    import json

    from bufferanytime.cli.main import main

    times: dict[str, list[float]] = {"npz": [], "npz,poses": []}
    cpu = {save: 0.0 for save in times}
    camera = []
    with tempfile.TemporaryDirectory() as tmp:

        def run(save: str) -> float:
            start, start_cpu = time.perf_counter(), _cpu_seconds()
            assert main(["depth", str(video_dir / "rgb.mp4"), "-o", f"{tmp}/out", "--save", save, "-q",
                         "--device", "cpu"]) == 0
            cpu[save] = cpu.get(save, 0.0) + _cpu_seconds() - start_cpu
            return time.perf_counter() - start

        run("npz,poses")  # warm-up: imports, first model load
        cpu = {save: 0.0 for save in times}
        for _ in range(repeats):
            for save in times:
                times[save].append(run(save))
                if save == "npz,poses":
                    meta = json.loads((Path(tmp) / "out" / "rgb" / "depth.meta.json").read_text())
                    camera.append(meta["camera"]["seconds"])
    ratios = np.array(times["npz,poses"]) / np.array(times["npz"])
    return (float(np.median(times["npz"])), float(np.median(times["npz,poses"])), float(np.median(ratios)),
            float(np.median(camera)), cpu["npz,poses"] / cpu["npz"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="120x160")
    parser.add_argument("--seed", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument("--one-thread", action="store_true")
    args = parser.parse_args()
    if args.one_thread:
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    size = tuple(int(v) for v in args.size.split("x"))
    if not args.cost_only:
        accuracy(args, size)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_video_dir(render_video(args.seed, args.frames, size), Path(tmp) / "clip")
        plain, poses, ratio, camera, cpu_ratio = cost(clip, args.repeats)
    print(f"\n(c) cost on one {args.frames}-frame clip, default embedded model, median of {args.repeats} alternated "
          f"runs: depth --save npz {plain:.2f} s, --save npz,poses {poses:.2f} s (+{100 * (ratio - 1):.0f} %; "
          f"camera part {camera:.2f} s); CPU seconds of the whole process +{100 * (cpu_ratio - 1):.0f} %")


def accuracy(args, size: tuple[int, int]) -> None:
    """Tables (a) and (b)."""
    from bufferanytime.models import load_model

    video_model, prior = load_model("depth"), load_model("depth", per_frame=True)
    exact = {"exact depth + flow, exact focal": [], "exact depth + flow, focal estimated": []}
    predicted = {"video model (embedded), point tracks": [], "per-frame prior, point tracks": []}
    solve_s = []
    for seed in range(args.seed, args.seed + args.videos):
        video = render_video(seed, args.frames, size)
        start = time.perf_counter()
        exact["exact depth + flow, exact focal"].append(summary(
            solve_cameras(video.depth, video.flow_fwd, video.flow_bwd, exact_intrinsics(video)), video))
        solve_s.append(time.perf_counter() - start)
        exact["exact depth + flow, focal estimated"].append(summary(
            solve_cameras(video.depth, video.flow_fwd, video.flow_bwd), video))
        tracks = frame_tracks(video.rgb)
        for name, model in zip(predicted, (video_model, prior), strict=True):
            predicted[name].append(summary(solve_tracks(predicted_depth(model, video.rgb), tracks), video))
        print(f"seed {seed}: done", flush=True)
    print(f"\nvideos: seeds {args.seed}..{args.seed + args.videos - 1}, {args.frames} frames at {args.size}; "
          f"solver (exact focal) {np.mean(solve_s) / args.frames * 1000:.1f} ms per frame; camera side {CAMERA_SIDE}")
    table("(a) the solver on exact depth and flow", exact, (*KEYS, "focal_pct"))
    table("(b) predicted depth (relative, zero shift) and point tracks", predicted, (*KEYS, "focal_pct"))


if __name__ == "__main__":
    main()
