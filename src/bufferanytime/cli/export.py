"""``bufferanytime export onnx MODEL -o DIR``: the video model (one window, T dynamic) and its per-frame prior as
ONNX files, with a JSON description of their inputs, outputs and size rule (:mod:`bufferanytime.export.onnx`).

Everything is staged and moved into ``DIR`` when complete; an unknown model, a bad ``--size`` or an output that
cannot be written is one ``error:`` line with exit code 2 and nothing written.
"""

from __future__ import annotations

import argparse

from bufferanytime.cli.args import MAX_EXPORT_FRAMES, MAX_INFERENCE_SIDE, int_at_most


def size_type(text: str) -> tuple[int, int]:
    """argparse type of --size: ``HxW`` -> (H, W), each side at most :data:`MAX_INFERENCE_SIDE`."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 266x476, got {text!r}")
    if max(int(p) for p in parts) > MAX_INFERENCE_SIDE:
        raise argparse.ArgumentTypeError(f"each side must be at most {MAX_INFERENCE_SIDE} (MAX_INFERENCE_SIDE), "
                                         f"got {text!r}")
    return int(parts[0]), int(parts[1])


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a model to another runtime (ONNX)",
                            description="Export a model to another runtime's format.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", parser_class=type(parser))
    onnx = formats.add_parser(
        "onnx", help="video model (one window) and per-frame prior as ONNX",
        description="Write TASK_video.onnx (frames (1,T,3,H,W) RGB in [0,1] -> the window's buffers, T dynamic), "
        "TASK_prior.onnx (images (N,3,H,W) -> buffers, N dynamic) and TASK.onnx.json (inputs, outputs, size rule, "
        "windows, the difference to PyTorch measured with ONNX Runtime) for each kind of MODEL. Needs "
        "`pip install 'bufferanytime[onnx]'`.")
    onnx.add_argument("model", metavar="MODEL",
                      help="registered model name (all its kinds), saved video-model directory, or prior directory "
                      "/ Hugging Face id (with --kind)")
    onnx.add_argument("-o", "--output", required=True, help="output directory (other files in it are kept)")
    onnx.add_argument("--kind", default=None,
                      help="which model to export, depth or normal (default: every kind MODEL has; required for a "
                      "prior)")
    onnx.add_argument("--size", type=size_type, default=None, metavar="HxW",
                      help="fixed input height x width, multiples of the model's patch (14 for depth, 8 or 16 for "
                      f"normals), each at most {MAX_INFERENCE_SIDE} (default: the model's inference size of a 4:3 "
                      "frame, e.g. 126x168 for the embedded depth model)")
    onnx.add_argument("--frames", type=int_at_most(MAX_EXPORT_FRAMES, 1, "MAX_EXPORT_FRAMES"), default=None,
                      metavar="T", help=f"window length of the example traced at export (T stays dynamic; default 4, "
                      f"2 to {MAX_EXPORT_FRAMES})")
    onnx.add_argument("--no-check", action="store_true",
                      help="skip running the files with ONNX Runtime against PyTorch after export")
    onnx.add_argument("-q", "--quiet", action="store_true", help="no progress lines and no 'wrote ...' line")
    onnx.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.error("choose a format: onnx"))


def run(args: argparse.Namespace) -> int:
    from bufferanytime.cli.steps import step_printer
    from bufferanytime.export.onnx import export_onnx

    described = export_onnx(args.model, args.output, kind=args.kind, size=args.size, frames=args.frames,
                            check=not args.no_check, say=step_printer(args.quiet))
    if not args.quiet:
        for task, info in described.items():
            files = ", ".join(f["file"] for f in info["files"].values())
            checks = [f["check"]["relative"] for f in info["files"].values() if "check" in f]
            worst = f"; ONNX Runtime vs PyTorch max |diff| {max(checks):.1e} of the range" if checks else ""
            print(f"wrote {args.output}/ ({files}, {task}.onnx.json{worst})")
    return 0
