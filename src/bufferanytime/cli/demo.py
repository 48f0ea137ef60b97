"""``bufferanytime demo``: the whole method on a fresh machine, with no download.

1. Renders a held-out synthetic video (a seed never used in training, with light flicker, exposure jitter and
   noise), and evaluates the per-frame prior against the video model on it, for depth and normals, with the
   ground-truth depth, normals and flow (``eval_depth/``, ``eval_normal/``: report.md, time slices).
2. Runs both on a real clip (``../shared/data/videos/davis_rollercoaster.mp4`` beside the checkout, or
   ``--input``): side-by-side videos (per-frame | video model), time slices, and OPW with DIS flow.
3. Writes ``report.md`` with all the numbers.

It uses the embedded default models. When a package has none, tiny RANDOM-weight priors are built on the fly
instead (the outputs then show the pipeline, not meaningful geometry) and the demo says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bufferanytime.cli.steps import Say, step_printer
from bufferanytime.errors import InputError
from bufferanytime.io.outputs import ensure_writable_dir, write_image
from bufferanytime.io.video import open_video
from bufferanytime.tasks import Task, get_task, list_tasks

DEMO_CLIP = Path("data/videos/davis_rollercoaster.mp4")  # inside the shared sample-data folder
DEMO_SEED = 777_777  # held out: never used to train or select the embedded models (see scripts/train_embedded.sh)
DEMO_SYNTH = {"num_frames": 24, "size": (168, 224), "flicker": 0.3, "exposure": 0.1, "noise": 0.01}
DEMO_FRAMES = 24
DEMO_MAX_RES = 224


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole method on a synthetic and a real clip (no set-up needed)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output directory (default demo_out)")
    p.add_argument("--input", type=Path, default=None,
                   help=f"real clip to process (default: ../shared/{DEMO_CLIP} next to the checkout)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress lines and no progress bars (bars are also off when stderr is not a terminal, "
                   "e.g. in a log file; the lines are not)")
    p.set_defaults(func=run)


def _show_progress(quiet: bool) -> bool:
    """Progress bars only on a terminal: nested bars redraw with cursor-movement escapes that garble a log."""
    return not quiet and sys.stderr.isatty()


def _default_input() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base.parent / "shared" / DEMO_CLIP
        if candidate.is_file():
            return candidate
    return None


def _models(out: Path) -> tuple[dict[str, str], bool]:
    from bufferanytime.models import DEFAULT_MODEL
    from bufferanytime.testing import make_tiny_prior

    if all(name in DEFAULT_MODEL for name in list_tasks()):
        return {name: DEFAULT_MODEL[name] for name in list_tasks()}, True
    return {name: str(make_tiny_prior(name, out / f"tiny-random-{name}-prior")) for name in list_tasks()}, False


def _real_clip(task: Task, model_name: str, clip: Path, out: Path, say: Say) -> dict:
    """Per-frame vs video model on a real clip: side-by-side mp4, time slice, OPW (DIS flow) of each."""
    from bufferanytime.app.work import column_ranges, side_by_side
    from bufferanytime.evaluation import opw
    from bufferanytime.evaluation.slices import column_index, compose_slices, time_slice
    from bufferanytime.inference import InferenceSettings, predict_frames
    from bufferanytime.io import VideoWriter
    from bufferanytime.io.video import VIS_CODEC_OPTIONS
    from bufferanytime.models import load_model

    source = open_video(clip, max_frames=DEMO_FRAMES)
    frames = np.stack(list(source))
    settings = InferenceSettings(max_res=DEMO_MAX_RES)
    preds = {}
    for label, per_frame in (("per-frame prior", True), ("video model", False)):
        say(f"real clip {task.name}: loading and running the {label} on {len(frames)} frames")
        model = load_model(task.name, model_name, per_frame=per_frame)
        preds[label] = np.stack(list(predict_frames(model, iter(frames), settings)))
    # each column its own colour range for the whole video: the two outputs are on different scales, and one
    # shared range would flatten the per-frame column and hide its flicker
    ranges = column_ranges(task, preds)
    say(f"real clip {task.name}: writing the side-by-side video and time slice, scoring OPW (DIS flow)")
    with VideoWriter(out / f"{task.name}_side_by_side.mp4", source.fps, codec_options=VIS_CODEC_OPTIONS) as writer:
        for frame in side_by_side(task, frames, preds, ranges):
            writer.write(frame)
    x = column_index(frames.shape[2])
    slices = [("RGB", time_slice(frames, x))]
    slices += [(label, task.to_rgb(time_slice(p, x), ranges[label])) for label, p in preds.items()]
    write_image(out / f"{task.name}_time_slice.png", compose_slices(frames[0], x, slices))
    return {label: opw(p, frames, task=task) for label, p in preds.items()}


def run(args: argparse.Namespace) -> int:
    clip = args.input or _default_input()
    if clip is None:
        raise InputError(f"no demo clip found (looked for ../shared/{DEMO_CLIP}); pass one with --input")
    open_video(clip, max_frames=DEMO_FRAMES)  # a bad clip fails here, before any work or output
    out = ensure_writable_dir(args.output)
    say = step_printer(args.quiet)
    models, embedded = _models(out)
    if embedded:
        print(f"Using the embedded models: depth '{models['depth']}', normal '{models['normal']}'.", flush=True)
    else:
        print("NOTE: this package has no embedded models, so the demo runs on tiny RANDOM-weight priors built on "
              "the fly. The outputs show the pipeline, not real depth or normals.", flush=True)
    synthetic = _synthetic(models, out, _show_progress(args.quiet), say)
    real_dir = out / "real"
    real_dir.mkdir(exist_ok=True)
    say(f"real clip {clip.name}: running both models")
    real = {name: _real_clip(get_task(name), models[name], clip, real_dir, say) for name in list_tasks()}
    for name, scores in real.items():
        print(f"real clip {name}: " + ", ".join(f"{label}: OPW {v:.4f}" for label, v in scores.items()), flush=True)
    (out / "report.md").write_text(_report(models, embedded, synthetic, real, clip))
    (out / "report.json").write_text(json.dumps({"models": models, "embedded": embedded, "synthetic": synthetic,
                                                 "real": {"clip": str(clip), **real}}, indent=2) + "\n")
    print(f"Report: {out / 'report.md'}")
    return 0


def _synthetic(models: dict[str, str], out: Path, progress: bool, say: Say) -> dict[str, dict]:
    """The per-frame prior against the video model of each task on a held-out synthetic video (mean metrics)."""
    from bufferanytime.evaluation.runner import EvalConfig, ModelSpec, run_evaluation
    from bufferanytime.inference import InferenceSettings
    from bufferanytime.synthetic import render_video, write_video_dir

    synth_root = out / "synthetic"
    say(f"rendering the held-out synthetic video (seed {DEMO_SEED}, {DEMO_SYNTH['num_frames']} frames)")
    write_video_dir(render_video(DEMO_SEED, **DEMO_SYNTH), synth_root / f"seq_{DEMO_SEED}")
    synthetic = {}
    for name in list_tasks():
        say(f"synthetic {name}: evaluating the per-frame prior and the video model")
        specs = [ModelSpec(models[name], per_frame=True, label="per-frame prior"),
                 ModelSpec(models[name], label="video model")]
        config = EvalConfig(task=name, dataset="synthetic", root=str(synth_root), models=specs, flow="gt",
                            inference=InferenceSettings(max_res=DEMO_MAX_RES, device="cpu"))
        synthetic[name] = run_evaluation(config, out / f"eval_{name}", progress=progress)["mean"]
        print(f"synthetic {name}: " + ", ".join(f"{label}: OPW {m['opw']:.4f}" for label, m in
                                                 synthetic[name].items()), flush=True)
    return synthetic


def _report(models: dict, embedded: bool, synthetic: dict, real: dict, clip: Path) -> str:
    lines = ["# bufferanytime demo", ""]
    if embedded:
        lines += [f"Models: the embedded `{models['depth']}` depth and `{models['normal']}` normal models "
                  "(demonstration models trained on procedural scenes, not real-world models)."]
    else:
        lines += ["Models: tiny RANDOM-weight priors (no embedded models in this package): these numbers say "
                  "nothing about the method."]
    lines += ["", f"## Held-out synthetic video (seed {DEMO_SEED}, flicker {DEMO_SYNTH['flicker']}, exposure "
              f"{DEMO_SYNTH['exposure']}, noise {DEMO_SYNTH['noise']}), ground-truth flow for OPW", "",
              "| task | model | accuracy | OPW ↓ |", "|---|---|---|---:|"]
    for name in list_tasks():
        task = get_task(name)
        lines += [f"| {name} | {label} | {task.headline(m)} | {m['opw']:.4f} |" for label, m in synthetic[name].items()]
    folders = ", ".join(f"`eval_{name}/`" for name in list_tasks())
    lines += ["", f"Per-sequence reports and time slices: {folders}.", "",
              f"## Real clip `{clip.name}` (first {DEMO_FRAMES} frames, no ground truth), OPW with DIS flow", "",
              "| task | per-frame prior | video model |", "|---|---:|---:|"]
    for name, scores in real.items():
        lines.append(f"| {name} | {scores['per-frame prior']:.4f} | {scores['video model']:.4f} |")
    lines += ["", "Side-by-side videos (RGB | per-frame | video) and time slices: `real/`.", ""]
    return "\n".join(lines)
