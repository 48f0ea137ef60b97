"""``bufferanytime eval depth|normal``: score models on a benchmark and write a report folder.

Writes ``REPORT/report.json`` (settings, per-sequence and mean metrics), ``REPORT/report.md`` (the paper's
table: rows = models, columns = AbsRel, delta1, OPW, seconds per frame) and ``REPORT/slices/<seq>.png`` (time
slices). Metric definitions: :mod:`bufferanytime.evaluation`.

A sequence that cannot be evaluated is reported in one ``error:`` line and skipped; a model whose output on a
sequence holds NaN or inf values is reported in one ``warning:`` line and its row marked "non-finite output". The
exit code is 0 when every result was scored, 1 when some sequences were skipped or some outputs were not finite, 2
when no sequence could be evaluated (nothing is written then).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bufferanytime.cli.args import add_options, check_device, finite_float, given_options, positive_int
from bufferanytime.evaluation.datasets import DATASETS
from bufferanytime.evaluation.runner import EVAL_OPTIONS, FLOW_CHOICES, EvalConfig, model_specs, run_evaluation
from bufferanytime.inference.online import ONLINE_MODES
from bufferanytime.inference.options import InferenceSettings
from bufferanytime.tasks import list_tasks
from bufferanytime.tasks.metric_depth import ALIGNMENTS

DESCRIPTION = (
    "Run one or more models over a benchmark and score them: depth with the DepthCrafter protocol (AbsRel, "
    "delta1 after one scale and shift per video in disparity; KITTI, ScanNet, Bonn, Sintel read from their official "
    "folder structures, or a synthetic set from `bufferanytime synth`), normals with angular errors, and temporal "
    "consistency with OPW (flow-warped differences between adjacent frames). Writes REPORT/report.json, "
    "REPORT/report.md and REPORT/slices/*.png, atomically. A sequence with missing or unreadable files is "
    "reported (one error line) and skipped, the others are still scored; a model output with NaN or inf values is "
    "reported (one warning line) and marked in the report; exit code 1 when some were skipped or not finite, 2 when "
    "none could be evaluated."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="score models on a benchmark (report.json, report.md, time slices)",
                              description=DESCRIPTION)
    p.add_argument("task", choices=list_tasks(), help="what the models predict")
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="benchmark and its folder layout")
    p.add_argument("--root", required=True, type=Path, help="dataset folder (see the evaluation README for layouts)")
    p.add_argument("--model", required=True, action="append", dest="models", metavar="M",
                   help="model to evaluate: registered name, saved video-model directory, or prior; repeat for more")
    p.add_argument("--per-frame", action="store_true",
                   help="also evaluate each model's per-frame baseline (its image prior alone), as an extra row")
    p.add_argument("--online", action="append", default=[], choices=ONLINE_MODES, metavar="MODE",
                   help="also run each model online, one frame at a time, as an extra row (repeatable): rolling = "
                   "the training-free baseline (the model over a rolling window of past frames, --window, default "
                   "its clip length; depth aligned to the frames already output), stream = a causal model's exact "
                   "incremental inference")
    p.add_argument("--align", choices=list(ALIGNMENTS), default=None,
                   help="how depth is aligned to the ground truth before AbsRel/delta1: none (metric depth as "
                   "predicted), scale (one scale per video), affine (one scale and shift per video in disparity, the "
                   "DepthCrafter protocol). Default: affine for relative models, none for metric ones; the report "
                   "says which was used")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="report folder: new, empty, or an earlier report (its report files are replaced when the new "
                   "ones are complete; an existing folder itself is kept)")
    p.add_argument("--flow", choices=list(FLOW_CHOICES), default="auto",
                   help="flow for OPW: auto = raft-small with --flow-weights, else dis; gt = the synthetic set's "
                   "ground-truth flow")
    p.add_argument("--flow-weights", default=None, help="official RAFT-small checkpoint (raft-small.pth)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="use at most N frames of each sequence")
    p.add_argument("--sequences", type=positive_int, default=None, help="evaluate only the first N sequences")
    p.add_argument("--column", type=finite_float, default=None,
                   help="time-slice column as a fraction of the width (default 0.5, the centre)")
    add_options(p, InferenceSettings, list(EVAL_OPTIONS))
    p.add_argument("--compare", type=Path, default=None, metavar="OTHER_REPORT",
                   help="an earlier report (its folder or report.json) of the same task and dataset: each model is "
                   "compared video by video with each of its models, mean difference and 95 %% bootstrap interval "
                   "over the videos both scored (10000 resamples, fixed seed), in report.json and report.md")
    p.add_argument("--note", action="append", default=[], help="a line shown at the top of report.md (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bufferanytime.cli.main import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
    from bufferanytime.evaluation.runner import NoSequenceEvaluated
    from bufferanytime.io.outputs import check_output_root

    inference = InferenceSettings(**given_options(args, InferenceSettings, list(EVAL_OPTIONS))).check()
    check_device(inference.device)
    check_output_root(args.output)
    config = EvalConfig(
        task=args.task,
        dataset=args.dataset,
        root=str(args.root),
        models=model_specs(args.models, args.per_frame, tuple(dict.fromkeys(args.online))),
        flow=args.flow,
        flow_weights=args.flow_weights,
        max_frames=args.max_frames,
        sequences=args.sequences,
        inference=inference,
        column=args.column,
        notes=list(args.note),
        align=args.align,
        compare=str(args.compare) if args.compare is not None else None,
    )
    try:
        report = run_evaluation(config, args.output, progress=not args.quiet)
    except NoSequenceEvaluated:
        return EXIT_USAGE  # each sequence has had its own error line
    missing = [f"{len(report['skipped'])} sequence(s) skipped"] if report["skipped"] else []
    missing += [f"{len(report['non_finite'])} result(s) with non-finite output"] if report["non_finite"] else []
    print(f"wrote {args.output / 'report.md'}" + (f" ({', '.join(missing)})" if missing else ""))
    for label, metrics in report["mean"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"  {label}: {shown}" if metrics["sequences"] else f"  {label}: no sequence scored (non-finite output)")
    for pair in report.get("compare", {}).get("pairs", []):
        print(f"  {pair['model']} - {pair['other_model']} ({pair['sequences']} paired videos): " + ", ".join(
            f"{key} {d['mean_diff']:+.4f}" + (f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d["ci95"] else "")
            for key, d in pair["metrics"].items() if key in ("abs_rel", "delta1", "opw", "mean")))
    return EXIT_PARTIAL if missing else EXIT_OK
