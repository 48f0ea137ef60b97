"""The 3D-consistent stabilization loss against the flow loss on forward-motion clips, with paired 95 % intervals.

Both arms fine-tune the same starting model (``--start``, default the shipped ``tiny-synthetic`` depth model) for
the same steps on the same clips; only ``--stabilization`` differs. Clips, all rendered by ``bufferanytime synth``
with light flicker (seeds never used for the shipped models):

- **train** (``--train-clips``): a forward dolly (``--camera dolly``) with wandering objects;
- **validation** (``--val-clips``, same kind): each arm's learning rate is chosen among ``--lrs`` by its mean
  validation AbsRel (one rate: nothing is chosen);
- **test** (``--test-clips``, same kind), and the **standard** held-out kind (``--standard-clips``, the default
  wandering camera): where the figures are reported.

Scored by ``bufferanytime eval depth --flow gt`` (DepthCrafter protocol, ground-truth flow for OPW); the 3D arm's
report is compared with the flow arm's by ``--compare`` (mean per-video difference, 95 % bootstrap interval over
videos, fixed seed). Printed: each arm's means, the paired differences with their intervals, the OPW ratio, and
whether the targets hold (AbsRel better with an interval excluding 0, OPW no worse than 1.05x). Written:
``WORK/summary_3d.json`` (``summary_3d_estimated.json`` with ``--camera-poses estimated``: the 3D arm on cameras
estimated from each training video, as for footage without poses) and the reports under ``WORK/``.

OPW counts every change along the flow as flicker, the true change of depth under a moving camera included (the
ground truth's own OPW is the floor), so a model that flattens that change scores better. Each set's figures
therefore also give the **temporal error**, ``eval``'s OPW of the error (``opw_err``: the aligned prediction minus
the ground truth, zero for the exact depth whatever the camera does, raised by flicker and by flattened motion
alike): per arm, and the paired difference with its 95 % interval.

    python benchmarks/stabilization_3d.py [--work DIR] [--steps 40] [--lrs 1e-4] [--frames 16] [--size 96x128]
                                          [--test-seed N] [--standard-seed N] [--camera-poses auto|estimated]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN_SEED, VAL_SEED, TEST_SEED, STANDARD_SEED = 80000, 81000, 82000, 83000
ARMS = ("flow", "3d")


def bufferanytime(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bufferanytime", *args], check=True)


def render(root: Path, seed: int, count: int, args: argparse.Namespace, camera: str) -> Path:
    if root.is_dir():  # rendered by an earlier run in the same --work (the same seeds give the same clips)
        return root
    bufferanytime("synth", "-o", str(root), "--videos", str(count), "--frames", str(args.frames), "--size", args.size,
                  "--seed", str(seed), "--camera", camera, "--flicker", "0.3", "-q")
    return root


def label(arm: str, args: argparse.Namespace) -> str:
    """The arm's name in file names: the 3D arm on estimated cameras is another arm than on the exact poses."""
    return "3d_estimated" if arm == "3d" and args.camera_poses == "estimated" else arm


def train(data: Path, out: Path, arm: str, lr: float, args: argparse.Namespace, cache: Path) -> Path:
    """Fine-tune ``--start`` on ``data`` with the arm's stabilization loss; the trained model's folder."""
    poses = ["--camera-poses", args.camera_poses] if arm == "3d" else []
    if not (out / "model").is_dir():
        bufferanytime("train", "depth", "--data", str(data), "--model", args.start, "--out", str(out), "--steps",
                      str(args.steps), "--clip-len", str(args.clip_len), "--res", args.size, "--lr", str(lr),
                      "--warmup", "0", "--ema", str(args.ema), "--workers", "0", "--cpu", "--cache", str(cache),
                      "--save-every", str(args.steps), "--stabilization", arm, "-q", *poses)
    return out / "model"


def evaluate(model: Path | str, root: Path, out: Path, compare: Path | None = None) -> dict:
    if not (out / "report.json").is_file():
        extra = ["--compare", str(compare)] if compare else []
        bufferanytime("eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model", str(model),
                      "--flow", "gt", "--device", "cpu", "-o", str(out), "-q", *extra)
    return json.loads((out / "report.json").read_text())


def mean(report: dict, key: str) -> float:
    return next(iter(report["mean"].values()))[key]


def chosen(work: Path, data: dict, arm: str, args: argparse.Namespace) -> tuple[float, Path, dict]:
    """The arm's learning rate with the lowest validation AbsRel, its model and the validation means."""
    results = []
    for lr in args.lrs:
        model = train(data["train"], work / f"run_{label(arm, args)}_{lr:g}", arm, lr, args, work / "cache")
        report = evaluate(model, data["val"], work / f"val_{label(arm, args)}_{lr:g}")
        results.append((mean(report, "abs_rel"), lr, model, {k: mean(report, k) for k in ("abs_rel", "opw")}))
    _, lr, model, val = min(results, key=lambda r: r[0])
    return lr, model, val


def paired(report: dict) -> dict:
    """AbsRel, OPW and the temporal error (``opw_err``): mean (3D - flow) and its 95 % interval, from the 3D report's
    comparison with the flow one."""
    metrics = report["compare"]["pairs"][0]["metrics"]
    return {k: {"mean_diff": metrics[k]["mean_diff"], "ci95": metrics[k]["ci95"], "3d": metrics[k]["this"],
                "flow": metrics[k]["other"]} for k in ("abs_rel", "opw", "opw_err")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--start", default="tiny-synthetic", help="model both arms fine-tune (default tiny-synthetic)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lrs", type=lambda s: [float(x) for x in s.split(",")], default=[1e-4])
    parser.add_argument("--ema", type=float, default=0.9)
    parser.add_argument("--clip-len", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="96x128")
    parser.add_argument("--train-clips", type=int, default=6)
    parser.add_argument("--val-clips", type=int, default=3)
    parser.add_argument("--test-clips", type=int, default=8)
    parser.add_argument("--standard-clips", type=int, default=6)
    parser.add_argument("--test-seed", type=int, default=TEST_SEED,
                        help=f"first seed of the forward-motion test clips (default {TEST_SEED}); a new one scores a "
                             f"change on clips it was never measured on")
    parser.add_argument("--standard-seed", type=int, default=STANDARD_SEED,
                        help=f"first seed of the standard clips (default {STANDARD_SEED})")
    parser.add_argument("--camera-poses", choices=("auto", "estimated"), default="auto",
                        help="the 3D arm's cameras: the clips' exact poses (auto, default) or estimated from each "
                             "video (train --camera-poses estimated); a --work of the other kind keeps its flow arm")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="stab3d-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {
        "train": render(work / "train", TRAIN_SEED, args.train_clips, args, "dolly"),
        "val": render(work / "val", VAL_SEED, args.val_clips, args, "dolly"),
        "test": render(work / "test", args.test_seed, args.test_clips, args, "dolly"),
    }
    if args.standard_clips:
        data["standard"] = render(work / "standard", args.standard_seed, args.standard_clips, args, "wander")
    summary: dict = {"settings": vars(args) | {"work": str(work)}, "arms": {}, "sets": {}}
    models = {}
    for arm in ARMS:
        lr, model, val = chosen(work, data, arm, args)
        models[arm] = model
        summary["arms"][arm] = {"lr": lr, "validation": val}
    start = evaluate(args.start, data["test"], work / "test_start")
    summary["start_test"] = {k: mean(start, k) for k in ("abs_rel", "opw", "opw_gt", "opw_err")}
    for name in [s for s in ("test", "standard") if s in data]:
        flow = evaluate(models["flow"], data[name], work / f"{name}_flow")
        three = evaluate(models["3d"], data[name], work / f"{name}_{label('3d', args)}", compare=work / f"{name}_flow")
        figures = paired(three)
        figures["opw_ratio"] = figures["opw"]["3d"] / figures["opw"]["flow"]
        figures["opw_gt"] = mean(flow, "opw_gt")
        figures["videos"] = three["compare"]["pairs"][0]["sequences"]
        summary["sets"][name] = figures
    (work / f"summary_{label('3d', args)}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(summary)


def print_summary(summary: dict) -> None:
    for arm, info in summary["arms"].items():
        print(f"{arm}: lr {info['lr']:g} (validation AbsRel {info['validation']['abs_rel']:.4f}, "
              f"OPW {info['validation']['opw']:.4f})")
    s = summary["start_test"]
    print(f"start model on the forward-motion test clips: AbsRel {s['abs_rel']:.4f}, OPW {s['opw']:.4f} "
          f"(ground truth's own OPW {s['opw_gt']:.4f}), temporal error {s['opw_err']:.4f}")
    for name, f in summary["sets"].items():
        a, o = f["abs_rel"], f["opw"]
        ci = a["ci95"] or [float("nan")] * 2
        print(f"{name} ({f['videos']} videos): AbsRel 3d {a['3d']:.4f} vs flow {a['flow']:.4f}, diff "
              f"{a['mean_diff']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]; OPW 3d {o['3d']:.4f} vs flow {o['flow']:.4f} "
              f"({f['opw_ratio']:.3f}x), diff {o['mean_diff']:+.4f} [{o['ci95'][0]:+.4f}, {o['ci95'][1]:+.4f}]; "
              f"ground truth's OPW {f['opw_gt']:.4f}")
        t = f["opw_err"]
        print(f"  temporal error (OPW of the aligned error; 0 for the exact depth): 3d {t['3d']:.4f} vs flow "
              f"{t['flow']:.4f}, diff {t['mean_diff']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]")
        better = a["ci95"] is not None and a["ci95"][1] < 0
        no_worse = a["ci95"] is not None and a["ci95"][0] <= 0
        print(f"  targets: AbsRel better with the interval excluding 0: {'yes' if better else 'no'}; OPW <= 1.05x: "
              f"{'yes' if f['opw_ratio'] <= 1.05 else 'no'}; AbsRel no worse (interval includes 0 or favours 3d): "
              f"{'yes' if no_worse else 'no'}")


if __name__ == "__main__":
    main()
