"""End-to-end ``bufferanytime depth`` against the model alone: what the command line adds to the model's time.

Alternates, in one run, ``--rounds`` times:

- **cli**: ``bufferanytime depth VIDEO --model PRIOR --max-frames N -o OUT`` in a fresh process (default
  formats: npz + visualisation), timed from process start to exit (``process_s``); its meta file gives the
  model's own seconds inside the run (``model_s``) and the time of ``run_video`` (``run_s``: decoding, model,
  writing, visualisation; the process minus start-up and model loading);
- **model**: a fresh process that decodes the same N frames into memory first (not timed), then runs them
  through the same windows with the same predictor (``predict_frames``, nothing written): ``model_s`` is the
  model-only time.

Printed: each measurement, then the ratios ``process / model-only`` (everything the user waits for, start-up and
model loading included), ``run_video / model-only`` (what the I/O threads address) and the CLI's own model time
against the model-only one (the cost of sharing the CPU with the I/O threads); last, ``run_video`` against the
model time of the same run, which a load that changes between the two processes does not disturb.

With ``--in-process`` the model-only run and ``run_video`` (decoding, model, writing; no start-up) alternate in
this one process, on one loaded model: a speed that differs between processes (seen here up to 6 % either way
between two runs of the same model-only code) then cancels out of their ratio.

With ``--per-frame-cli`` each round also runs ``bufferanytime depth --per-frame`` (the prior alone, same frames
and formats) and prints the video model's CLI against it: the video model against the per-frame prior, end to
end. Default model: random weights in the Depth Anything V2 Small architecture at its default input
size (518 short side), on a real clip; ``--model NAME`` runs a registered or saved model instead.

    python benchmarks/cli_overhead.py [--video V] [--frames 44] [--rounds 3] [--arch small | --model M] [--short-side N]
                                      [--per-frame-cli | --in-process]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bufferanytime.testing import make_sized_depth_prior

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "davis_rollercoaster.mp4"
CLI = "import sys\nfrom bufferanytime.cli.main import entry\nsys.exit(entry(sys.argv[1:]))\n"  # the program
MODEL_ONLY = """
import json, sys
from bufferanytime.cli.main import quiet_library_progress_bars
from bufferanytime.inference import InferenceSettings, Predictor, predict_frames, resolve_device
from bufferanytime.io.video import open_video
from bufferanytime.models import load_model

quiet_library_progress_bars()
video, prior, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
short_side = int(sys.argv[4]) or None
decoded = list(open_video(video, max_frames=frames))
model = load_model("depth", prior)
settings = InferenceSettings(precision="auto", short_side=short_side)
predictor = Predictor(model, resolve_device("cpu"), settings.precision)
count = sum(1 for _ in predict_frames(model, iter(decoded), settings, predictor))
print(json.dumps({"model_s": predictor.seconds, "frames": count, "precision": predictor.precision}))
"""
# what is compared with the model-only time: (label, key of the cli measurement)
RATIOS = (("process (start-up + load + run)", "process_s"), ("run_video (decode + model + write)", "run_s"),
          ("model inside the CLI", "model_s"))


def run_cli(video: Path, prior: Path, frames: int, short_side: int, out: Path, per_frame: bool = False) -> dict:
    size = ["--short-side", str(short_side)] if short_side else []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, "depth", str(video), "--model", str(prior), "--max-frames",
                    str(frames), *size, *(["--per-frame"] if per_frame else []), "-o", str(out), "-q"], check=True)
    process_s = time.perf_counter() - start
    meta = json.loads((out / video.stem / "depth.meta.json").read_text())
    return {"process_s": process_s, "run_s": meta["timings"]["total_s"], "model_s": meta["timings"]["model_s"],
            "precision": meta.get("precision", {}).get("used")}


def run_model(video: Path, prior: Path, frames: int, short_side: int) -> dict:
    done = subprocess.run([sys.executable, "-c", MODEL_ONLY, str(video), str(prior), str(frames), str(short_side)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_process(video: Path, prior: Path, frames: int, short_side: int, rounds: int, tmp: Path) -> None:
    """Alternate model-only and ``run_video`` in this process; print each round and the median ratio."""
    from bufferanytime.cli.main import quiet_library_progress_bars
    from bufferanytime.inference import InferenceSettings, Predictor, predict_frames, resolve_device, run_video
    from bufferanytime.io.video import open_video
    from bufferanytime.models import load_model

    quiet_library_progress_bars()
    decoded = list(open_video(video, max_frames=frames))
    model = load_model("depth", str(prior))
    settings = InferenceSettings(precision="auto", short_side=short_side or None)
    predictor = Predictor(model, resolve_device("cpu"), settings.precision)
    ratios = []
    for i in range(rounds):
        before = predictor.seconds
        for _ in predict_frames(model, iter(decoded), settings, predictor):
            pass
        model_s = predictor.seconds - before
        meta = run_video(model, open_video(video, max_frames=frames), tmp / f"in{i}", settings, progress=False,
                         predictor=predictor)
        run_s, inside = meta["timings"]["total_s"], meta["timings"]["model_s"]
        ratios.append(run_s / model_s)
        print(f"round {i + 1}: model-only {model_s:.2f} s; run_video {run_s:.2f} s (its model {inside:.2f} s): "
              f"run_video / model-only {ratios[-1]:.3f}x, its model / model-only {inside / model_s:.3f}x", flush=True)
    print(f"in one process, run_video (decode + model + write) / model-only: median {statistics.median(ratios):.3f}x "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}), {frames} frames, {predictor.precision}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=44)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arch", default="small", help="Depth Anything V2 architecture (random weights)")
    parser.add_argument("--model", default=None,
                        help="a model to load by name or path instead (e.g. tiny-synthetic, the default one)")
    parser.add_argument("--short-side", type=int, default=0, help="inference short side (0: the model's, 518)")
    parser.add_argument("--per-frame-cli", action="store_true",
                        help="also run the CLI with --per-frame each round, and compare the video model's CLI with it")
    parser.add_argument("--in-process", action="store_true",
                        help="alternate model-only and run_video in this one process (no start-up measured)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prior = args.model or make_sized_depth_prior(Path(tmp) / f"da-v2-{args.arch}", args.arch)
        if args.in_process:
            return in_process(args.video, prior, args.frames, args.short_side, args.rounds, Path(tmp))
        cli, model, per_frame = [], [], []
        for i in range(args.rounds):
            cli.append(run_cli(args.video, prior, args.frames, args.short_side, Path(tmp) / f"out{i}"))
            print("cli  ", json.dumps(cli[-1]), flush=True)
            model.append(run_model(args.video, prior, args.frames, args.short_side))
            print("model", json.dumps(model[-1]), flush=True)
            if args.per_frame_cli:
                per_frame.append(run_cli(args.video, prior, args.frames, args.short_side, Path(tmp) / f"pf{i}", True))
                print("prior", json.dumps(per_frame[-1]), flush=True)
    only = statistics.median(m["model_s"] for m in model)
    for name, key in RATIOS:
        ratios = [c[key] / m["model_s"] for c, m in zip(cli, model, strict=True)]  # each round's own pair
        print(f"{name} / model-only: median {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-"
              f"{max(ratios):.3f}); {statistics.median(c[key] for c in cli):.2f} s vs {only:.2f} s, "
              f"{args.frames} frames")
    inside = [c["run_s"] / c["model_s"] for c in cli]  # same process, same load: what is not the model in run_video
    for name, key in RATIOS if per_frame else ():
        ratios = [c[key] / p[key] for c, p in zip(cli, per_frame, strict=True)]
        print(f"video model CLI / per-frame prior CLI, {name.split(' (')[0]}: median {statistics.median(ratios):.3f}x "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"run_video / the CLI's own model time: median {statistics.median(inside):.3f}x (range {min(inside):.3f}-"
          f"{max(inside):.3f})")


if __name__ == "__main__":
    main()
