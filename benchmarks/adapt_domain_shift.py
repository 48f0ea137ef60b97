"""``bufferanytime adapt`` under a domain shift: OPW and AbsRel of the adapted model against the shipped one.

The shifted domain is rendered by ``bufferanytime synth`` with what the shipped models never saw: photo textures
(``--textures``, by default the photos that ship with Gradio, a dependency of the app), stronger light flicker,
exposure jitter and pixel noise, and a camera that moves straight ahead (``--camera dolly``, a car's motion;
``--camera rotate`` turns it on the spot) instead of wandering. Three disjoint sets of its clips (seeds never used
for the shipped models):

- **adapt** (``--adapt-clips``, 3): what ``bufferanytime adapt depth`` trains on, within ``--budget`` (5m);
- **validation** (``--val-clips``): used only to choose among the ``--lrs`` tried (one: nothing is chosen);
- **test** (``--test-clips``): where the figures are reported, with the original synthetic domain's clips
  (procedural textures, the flicker of the shipped model's training data) as the second report.

For every test clip, the shipped model and the adapted one are run through the inference pipeline at their own
size; OPW uses DIS flow on the RGB frames (as ``eval --flow dis``), AbsRel the ground-truth depth (DepthCrafter
protocol, one scale and shift per video, depth capped at ``SYNTHETIC_MAX_DEPTH``), and the OPW of the error
(``eval``'s ``opw_err`` with the exact flows: the aligned prediction minus the ground truth, zero for the exact
depth). Printed: the mean of each figure, the ratio adapted / shipped, the ground truth's own OPW (the floor a
correct model cannot go below without flattening true motion in depth), the adapt run's wall-clock time against
its budget, and the peak memory (RSS) of the adapt process against that of ``bufferanytime depth`` on one of its
clips.

    python benchmarks/adapt_domain_shift.py [--work DIR] [--budget 5m] [--lrs 1e-3,3e-4] [--frames 32] [--size 192x256]
        [--camera dolly|rotate|wander] [--test-seed N] [--original-seed N] [--w-reg W] [--prior-tolerance T]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import run_python  # noqa: E402

ADAPT_SEED, VAL_SEED, TEST_SEED, ORIGINAL_SEED = 70000, 71000, 80000, 81000
SHIFT = {"flicker": 0.6, "exposure": 0.3, "noise": 0.03, "camera": "dolly"}  # the shifted domain: nuisances, motion
ORIGINAL = {"flicker": 0.2, "exposure": 0.0, "noise": 0.0}


def default_textures() -> Path:
    import gradio

    return Path(gradio.__file__).parent / "media_assets" / "images"


def render(root: Path, seed: int, count: int, frames: int, size: str, nuisances: dict, textures: Path | None) -> list:
    """``count`` clips from ``seed`` on, via ``bufferanytime synth``; their sequence folders."""
    command = [sys.executable, "-m", "bufferanytime", "synth", "-o", str(root), "--videos", str(count), "--frames",
               str(frames), "--size", size, "--seed", str(seed), "-q"]
    command += [f"--{k}={v}" for k, v in nuisances.items()]
    if textures is not None:
        command += ["--textures", str(textures)]
    subprocess.run(command, check=True)
    return [root / f"seq_{seed + i:06d}" for i in range(count)]


def measured(command: list[str]) -> tuple[float, int]:
    """Wall-clock seconds and peak RSS (kB, its own ``VmHWM``) of the Python ``command`` in a process of its own."""
    assert command[0] == sys.executable, command
    began = time.perf_counter()
    _, rss = run_python(command[1:], check=True, capture_output=True, text=True)
    return time.perf_counter() - began, rss


def adapt(clips: list[Path], out: Path, budget: str, lr: float | None, w_reg: float | None = None,
          tolerance: float | None = None) -> dict:
    """Run ``bufferanytime adapt depth`` on the clips' videos (``--lr lr``, ``--w-reg w_reg``, ``--prior-tolerance
    tolerance`` unless None: the command's defaults); its record, wall time and peak memory."""
    command = [sys.executable, "-m", "bufferanytime", "adapt", "depth", *[str(c / "rgb.mp4") for c in clips], "-o",
               str(out), "--budget", budget, "-q"] + ([] if lr is None else ["--lr", str(lr)])
    command += [] if w_reg is None else ["--w-reg", str(w_reg)]
    command += [] if tolerance is None else ["--prior-tolerance", str(tolerance)]
    seconds, rss = measured(command)
    record = json.loads((out / "adapt.json").read_text())
    return {"record": record, "seconds": seconds, "rss_kb": rss}


def model_name(lr: float | None) -> str:
    return "model-default-lr" if lr is None else f"model-lr{lr:g}"


def clip_flows(clips: list[Path]) -> list:
    """The DIS flows (and OPW masks) of each clip's RGB frames, as ``eval --flow dis`` estimates them: computed once
    per clip and shared by every model scored on it and by its ground truth."""
    from bufferanytime.evaluation import estimate_flows
    from bufferanytime.io.video import open_video

    return [estimate_flows(open_video(clip / "rgb")) for clip in clips]


def floor(clips: list[Path], flows: list) -> float:
    """Mean OPW of the clips' ground-truth depth (as disparity) with the clips' ``flows``: what a perfect prediction
    scores, the camera's and objects' true motion in depth included."""
    from bufferanytime.evaluation import opw
    from bufferanytime.evaluation.runner import _Reciprocal

    return float(np.mean([opw(_Reciprocal(np.load(clip / "depth.npy")), flows=f) for clip, f in zip(clips, flows,
                                                                                                     strict=True)]))


def ground_truth_flows(clips: list[Path]) -> list:
    """Each synthetic clip's exact flows and OPW masks (as ``eval --flow gt``), each folder of clips listed once."""
    from bufferanytime.evaluation import SequenceFlows
    from bufferanytime.evaluation.datasets import synthetic_sequences

    listed = {root: {s.name: s for s in synthetic_sequences(root)} for root in {clip.parent for clip in clips}}
    return [SequenceFlows.from_flows(*listed[clip.parent][clip.name].gt_flows(), method="ground truth")
            for clip in clips]


def scores(model_ref: str | None, clips: list[Path], flows: list) -> dict:
    """Mean OPW (with the clips' ``flows``), AbsRel and OPW of the error (``eval``'s ``opw_err``, with the exact
    flows: zero for the exact depth, so true motion in depth is not counted as flicker) of a depth model over clips
    (synthetic sequence folders), and each clip's."""
    from bufferanytime.evaluation import opw
    from bufferanytime.evaluation.runner import error_opw
    from bufferanytime.inference.options import InferenceSettings
    from bufferanytime.inference.pipeline import predict_frames
    from bufferanytime.io.video import open_video
    from bufferanytime.models import load_model
    from bufferanytime.tasks import get_task

    model, task = load_model("depth", model_ref), get_task("depth")
    per_clip: dict[str, list[float]] = {"opw": [], "abs_rel": [], "opw_err": []}
    for clip, clip_flow, exact in zip(clips, flows, ground_truth_flows(clips), strict=True):
        pred = np.stack(list(predict_frames(model, open_video(clip / "rgb"), InferenceSettings(device="cpu"))))
        gt = np.load(clip / "depth.npy")
        metrics = task.score(pred, gt, "synthetic")
        per_clip["opw"].append(opw(pred, flows=clip_flow))
        per_clip["abs_rel"].append(metrics["abs_rel"])
        per_clip["opw_err"].append(error_opw(task, pred, gt, exact, metrics, "synthetic")
                                   .get("opw_err", float("nan")))
    return {**{k: float(np.nanmean(v)) for k, v in per_clip.items()}, "per_clip": per_clip}


def compared(shipped: dict, adapted: dict) -> dict:
    """Adapted against shipped: the ratio of the means, and the mean per-clip difference with its paired 95 %
    bootstrap interval (``eval --compare``'s)."""
    from bufferanytime.evaluation.compare import bootstrap_ci

    out = {}
    for key in ("opw", "abs_rel", "opw_err"):
        diffs = np.subtract(adapted["per_clip"][key], shipped["per_clip"][key])
        diffs = diffs[np.isfinite(diffs)]
        out[key] = {"ratio": adapted[key] / shipped[key], "difference": float(diffs.mean()),
                    "ci95": bootstrap_ci(diffs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for clips and models (default: temporary)")
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--lrs", default=None,
                        help="learning rates tried, chosen on the validation clips (default: the command's own)")
    parser.add_argument("--w-reg", type=float, default=None, help="adapt's --w-reg (default: the command's own)")
    parser.add_argument("--prior-tolerance", type=float, default=None,
                        help="adapt's --prior-tolerance (default: the command's own)")
    parser.add_argument("--textures", type=Path, default=None)
    parser.add_argument("--adapt-clips", type=int, default=3)
    parser.add_argument("--val-clips", type=int, default=6)
    parser.add_argument("--test-clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="192x256")
    parser.add_argument("--camera", default=SHIFT["camera"], choices=("wander", "dolly", "rotate"),
                        help="the shifted domain's camera motion (default: %(default)s)")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED,
                        help="first seed of the test clips; a new measurement takes seeds not reported before")
    parser.add_argument("--original-seed", type=int, default=ORIGINAL_SEED,
                        help="first seed of the original domain's test clips")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="adapt-bench-"))
    textures = args.textures or default_textures()
    frames, size, shift = args.frames, args.size, {**SHIFT, "camera": args.camera}
    adapt_clips = render(work / "shift", ADAPT_SEED, args.adapt_clips, frames, size, shift, textures)
    val_clips = render(work / "shift", VAL_SEED, args.val_clips, frames, size, shift, textures)
    test_clips = render(work / "shift", args.test_seed, args.test_clips, frames, size, shift, textures)
    original = render(work / "original", args.original_seed, args.test_clips, frames, size, ORIGINAL, None)

    runs, lrs = {}, [float(v) for v in args.lrs.split(",")] if args.lrs else [None]
    val_flows = clip_flows(val_clips) if len(lrs) > 1 else None
    for lr in lrs:
        runs[lr] = adapt(adapt_clips, work / model_name(lr), args.budget, lr, args.w_reg, args.prior_tolerance)
        runs[lr]["val"] = scores(str(work / model_name(lr)), val_clips, val_flows) if len(lrs) > 1 else None
        print(f"lr {runs[lr]['record']['settings']['lr']:g}: {runs[lr]['record']['result']} in "
              f"{runs[lr]['seconds']:.0f} s, validation {runs[lr]['val']}", flush=True)
    chosen = min(runs, key=lambda lr: runs[lr]["val"]["opw"]) if len(runs) > 1 else next(iter(runs))
    model_dir = str(work / model_name(chosen))
    depth_seconds, depth_rss = measured([sys.executable, "-m", "bufferanytime", "depth",
                                         str(adapt_clips[0] / "rgb.mp4"), "-o", str(work / "depth-out"), "-q"])
    report = {"camera": args.camera, "test_seed": args.test_seed, "original_seed": args.original_seed,
              "budget": args.budget, "lr": runs[chosen]["record"]["settings"]["lr"],
              "adapt_seconds": runs[chosen]["seconds"],
              "steps_done": runs[chosen]["record"].get("validation", {}).get("steps_done"),
              "adapt_rss_mb": runs[chosen]["rss_kb"] / 1024, "depth_rss_mb": depth_rss / 1024,
              "result": runs[chosen]["record"]["result"], "guard": runs[chosen]["record"].get("guard"),
              "settings": runs[chosen]["record"].get("settings")}
    for name, clips in (("shifted domain (test clips)", test_clips), ("original domain", original)):
        flows = clip_flows(clips)
        shipped, adapted = scores(None, clips, flows), scores(model_dir, clips, flows)
        report[name] = {"shipped": shipped, "adapted": adapted, "adapted_vs_shipped": compared(shipped, adapted),
                        "ground_truth_opw": floor(clips, flows)}
    print(json.dumps(report, indent=2))
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
