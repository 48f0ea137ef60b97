"""The Gradio page of ``bufferanytime app``: inputs, the queue, limits, per-session folders and their clean-up.

Each request runs in its own folder under one temporary root of the app (``Session.new_request``); a session's
folders are removed when its browser tab goes away (``demo.unload`` and the session state's delete callback),
and the whole root when the app stops. Errors reach the page as one-line messages (``gr.Error``), never as a
stack trace; an unexpected failure is logged on the server and shown as one line.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import traceback
import uuid
from dataclasses import Field
from pathlib import Path

from bufferanytime.app.access import ModelAccess
from bufferanytime.app.work import APP_OPTIONS, LABELS, MAX_FRAMES, Progress, Request, Result, run
from bufferanytime.errors import InputError
from bufferanytime.inference.options import InferenceSettings
from bufferanytime.io.video import VIDEO_EXTENSIONS
from bufferanytime.options import default_of, info, value_types
from bufferanytime.tasks import get_task, list_tasks

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
import gradio as gr  # noqa: E402 - after the setting above; module level, so Gradio resolves the gr.Request hints

MAX_UPLOAD = "200mb"
CONCURRENCY = 1  # requests run at once (each uses every core); others wait in the queue
QUEUE_SIZE = 16
EXAMPLE = "bundled example (synthetic, with ground truth)"
UPLOAD = "uploaded file"
BOTH = "both"
ADAPT_BUDGET = "1m"  # the adaptation budget offered (the command's default, 5m, is long for a web page)


class Sessions:
    """Per-session request folders under one temporary root, removed when the session or the app ends."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="bufferanytime-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        atexit.register(self.close)

    def new_request(self, session: str) -> Path:
        """A fresh folder for one request of ``session`` (never shared with another request)."""
        with self._lock:
            folder = self.root / session / uuid.uuid4().hex[:12]
            folder.mkdir(parents=True)
        return folder

    def end(self, session: str | None) -> None:
        """Remove every folder of ``session``."""
        if session:
            shutil.rmtree(self.root / session, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def task_names(choice: str) -> tuple[str, ...]:
    """The tasks of the UI's choice: one task's name, or all of them for "both"."""
    return tuple(list_tasks()) if choice == BOTH else (get_task(choice).name,)


def _optional_int(value: float | None) -> int | None:
    return int(value) if value else None


def status_line(result: Result, request: Request) -> str:
    """``done: N frames, TASKS``, saying which part of a longer input was used."""
    used = f"{result.frames} frames"
    if request.input is not None and (request.first or request.stride > 1):
        how = [f"first {request.first}"] * bool(request.first) + [f"every {_ordinal(request.stride)}"] * (
            request.stride > 1)
        used = f"{result.frames} of {result.total_frames} frames ({', '.join(how)})"
    return f"done: {used}, {', '.join(request.tasks)}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def metrics_markdown(result: Result) -> str:
    """The numbers as a Markdown table: OPW (lower is steadier) and, with ground truth, the accuracy."""
    has_truth = any("accuracy" in m for by_label in result.metrics.values() for m in by_label.values())
    header = "| task | model | OPW ↓ |" + (" accuracy |" if has_truth else "")
    lines = [header, "|---|---|---:|" + ("---|" if has_truth else "")]
    for name, by_label in result.metrics.items():
        for label in LABELS:
            m = by_label[label]
            lines.append(f"| {name} | {label} | {m['opw']:.4f} |" + (f" {m['accuracy']} |" if has_truth else ""))
    return "\n".join(lines + [adaptation_line(name, summary) for name, summary in result.adaptation.items()])


def adaptation_line(task: str, summary: dict) -> str:
    """What adapting ``task``'s video model did: its steps, OPW before and after on the held-out part of the
    video, and whether the adapted model is the one shown (else why not)."""
    figures = ""
    if summary["opw_before"] is not None and summary["opw_after"] is not None:
        figures = f": OPW on its held-out part {summary['opw_before']:.4f} → {summary['opw_after']:.4f}"
    elif summary["opw_before"] is not None:
        figures = f": OPW on its held-out part {summary['opw_before']:.4f} before"
    used = ("the adapted model is shown" if summary["result"] == "adapted" else
            f"the starting model is shown ({summary['reason']})")
    return (f"\n**{task}: adapted to this video** ({summary['steps']} steps, budget {summary['budget']})"
            f"{figures}; {used}")


def process(sessions: Sessions, session: str, source: str, upload: str | None, choice: str, model: str,
            *options: float | str | None, first: float | None = None, stride: float | None = None,
            max_frames: int = MAX_FRAMES, progress: Progress | None = None, access: ModelAccess | None = None,
            adapt: str | None = None) -> tuple[Result, str]:
    """One request in its own folder of ``session``: the result and its status line; InputError when unusable.

    ``options`` are the values of the controls of :data:`APP_OPTIONS`, in their order. ``access`` decides which
    models the request may load (default: any, as on this machine only). ``adapt``: a budget to adapt each video
    model to the input first (see :func:`bufferanytime.app.work.adapt_model`), None: no adaptation."""
    if source != EXAMPLE and not upload:
        raise InputError("upload a video or a zip of frames first, or choose the bundled example")
    access = access or ModelAccess()
    request = Request(input=None if source == EXAMPLE else Path(upload), tasks=task_names(choice),
                      model=access.resolve(model), options=app_options(options), max_frames=max_frames,
                      first=_optional_int(first),
                      stride=int(stride) if stride is not None else 1, adapt=adapt)
    folder = sessions.new_request(session)
    try:
        result = run(request, folder, progress or (lambda fraction, text: None))
    except InputError as exc:  # the page names the user's file, not the server's folders
        message = str(exc).replace(f"{folder}/", "").replace(str(folder), "")
        raise InputError(message.replace(str(upload), Path(upload).name) if upload else message) from exc
    return result, status_line(result, request)


def app_options(values: tuple) -> dict:
    """``{name: value}`` of the inference options from their controls' values; a number's 0 or blank is absent
    (the model's own), as the labels say."""
    out = {}
    for f, value in zip(APP_OPTIONS, values, strict=True):
        kind = value_types(InferenceSettings)[f.name][0]
        if kind in (int, float):
            value = kind(value) if value else None
        if value is not None:
            out[f.name] = value
    return out


def _option_control(f: Field) -> gr.components.Component:
    """The control of one inference option, from its declaration: a number (0: the default) or a choice."""
    option = info(f)
    if option.choices:
        return gr.Radio(list(option.choices), value=default_of(f), label=option.app, elem_id=f.name)
    whole = value_types(InferenceSettings)[f.name][0] is int
    return gr.Number(0, label=option.app, precision=0 if whole else None, minimum=0, elem_id=f.name)


def user_message(exc: BaseException, access: ModelAccess | None = None) -> str:
    """The one line the page shows for a failure, without the server's paths when ``access`` says so; anything
    unexpected is also logged here in full."""
    if isinstance(exc, InputError):
        message = str(exc)
    else:
        traceback.print_exception(exc, file=sys.stderr)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        message = f"internal error ({type(exc).__name__}: {detail}); see the server's log"
    return access.scrub(message) if access else message


def _source_inputs() -> dict:
    """The input choice, the upload box and the trim controls (hidden with the box for the bundled example)."""
    source = gr.Radio([UPLOAD, EXAMPLE], value=UPLOAD, label="Input")
    with gr.Column(elem_id="upload_box") as box:
        upload = gr.File(label="A video (.mp4, .mov, ...) or a zip of frames", type="filepath",
                         file_types=[*sorted(VIDEO_EXTENSIONS), ".zip"], elem_id="upload")
        with gr.Row():
            first = gr.Number(0, label="First frames (0: all)", precision=0, minimum=0, elem_id="first")
            stride = gr.Number(1, label="Every Nth frame", precision=0, minimum=1, elem_id="stride")
    source.change(lambda choice: gr.update(visible=choice == UPLOAD), source, box, queue=False)
    return {"source": source, "upload": upload, "first": first, "stride": stride}


def _inputs(access: ModelAccess) -> dict:
    """The input widgets, by the name of the ``process`` argument they feed."""
    with gr.Column():
        src = _source_inputs()
        choice = gr.Radio([*list_tasks(), BOTH], value=list_tasks()[0], label="Buffer")
        models = access.choices()
        model = gr.Dropdown(models, value=models[0] if models else None, allow_custom_value=access.open_paths,
                            label=access.notice(), elem_id="model")
        with gr.Row():
            controls = [_option_control(f) for f in APP_OPTIONS]
        with gr.Row():
            adapt = gr.Checkbox(False, label="Adapt the video model to this video first (slower; OPW before and "
                                "after shown)", elem_id="adapt")
            budget = gr.Textbox(ADAPT_BUDGET, label="Adaptation budget (a time such as 1m, or steps such as 20steps)",
                                elem_id="adapt_budget")
        button = gr.Button("Run", variant="primary", elem_id="run")
    return {"button": button, "args": [src["source"], src["upload"], choice, model, src["first"], src["stride"],
                                       adapt, budget, *controls]}


def _outputs() -> list:
    """The output widgets, in the order ``on_run`` returns their values. The video and the time slice carry
    their captions above them, not as Gradio's badge and toolbar, which would cover their own column labels."""
    with gr.Column():
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        gr.Markdown("**input | per-frame prior | video model** (each column its own colour range)")
        video = gr.Video(show_label=False, buttons=[], elem_id="result_video", interactive=False, autoplay=True,
                         loop=True)
        metrics = gr.Markdown(elem_id="metrics")
    return [status, video, metrics]


def _wide_outputs() -> list:
    """The time slice, the 3D view and the downloads, across the page: the slice is as wide as the video is
    long."""
    gr.Markdown("**Time slice**: one column of the video over time, left to right. Steady buffers show "
                "horizontal bands; flicker shows as vertical stripes.")
    slice_image = gr.Image(show_label=False, buttons=[], type="filepath", elem_id="time_slice", interactive=False)
    scene = gr.Model3D(label="3D: the video model's depth fused into one scene, with the camera's path (amber) and "
                       "frustums; depth runs only", elem_id="scene3d", interactive=False, height=480,
                       clear_color=(0.12, 0.12, 0.14, 1.0))
    downloads = gr.File(label="Downloads: npz, 16-bit PNG zip, EXR zip; for depth also the fused scene (PLY, GLB), "
                        "camera.json, COLMAP and nerfstudio zips", file_count="multiple", elem_id="downloads",
                        interactive=False)
    return [slice_image, scene, downloads]


def _intro(max_frames: int, access: ModelAccess) -> str:
    models = "" if access.open_paths else (" This server offers its embedded models and the ones its operator "
                                           "lists; other paths are refused.")
    return ("# Buffer Anytime\nTemporally consistent video depth and normals from a single-image prior: the "
            f"per-frame prior beside the video model. Inputs up to {max_frames} frames: trim a longer clip with "
            f"*First frames* or *Every Nth frame*.{models}")


def build_app(sessions: Sessions | None = None, max_frames: int = MAX_FRAMES, access: ModelAccess | None = None
              ) -> gr.Blocks:
    """The Gradio Blocks of the app (not started); ``sessions`` holds the request folders, ``access`` says which
    models the page offers and accepts (default: any, for a page served on this machine only)."""
    sessions, access = sessions or Sessions(), access or ModelAccess()

    def on_run(request: gr.Request, progress=gr.Progress(), *args):  # noqa: B008 - how Gradio injects its progress
        """The Run button: ``args`` are the values of ``_inputs(...)["args"]`` (Gradio puts its own first)."""

        def report(fraction: float, text: str) -> None:
            progress(fraction, desc=text)

        source, upload, choice, model, first, stride, adapt, budget, *options = args
        try:
            result, status = process(sessions, request.session_hash, source, upload, choice, model, *options,
                                     first=first, stride=stride, max_frames=max_frames, progress=report,
                                     access=access, adapt=(budget or "").strip() if adapt else None)
        except Exception as exc:  # every failure is a message in the page
            return f"error: {user_message(exc, access)}", None, "", None, None, None, request.session_hash
        return (status, str(result.side_by_side), metrics_markdown(result), str(result.time_slice),
                str(result.scene) if result.scene else None, [str(p) for p in result.downloads],
                request.session_hash)

    def on_unload(request: gr.Request) -> None:
        sessions.end(request.session_hash)

    with gr.Blocks(title="Buffer Anytime", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(_intro(max_frames, access))
        session = gr.State(None, delete_callback=sessions.end)
        with gr.Row():
            inputs = _inputs(access)
            outputs = _outputs()
        outputs += _wide_outputs()
        inputs["button"].click(on_run, inputs["args"], [*outputs, session], concurrency_limit=CONCURRENCY)
        demo.unload(on_unload)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Start serving ``demo`` on ``host:port`` in the background and return its address (no share link, no
    analytics, no server-side rendering, nothing printed); InputError when the port is taken."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    try:
        demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_UPLOAD, ssr_mode=False,
                    prevent_thread_lock=True, quiet=True, theme=theme, show_error=False, footer_links=[],
                    mcp_server=False)
    except OSError as exc:
        if not str(exc).startswith("Cannot find empty port"):  # Gradio's words for a failed bind
            raise
        raise InputError(f"cannot serve on {host}:{port}: the port is in use (choose another with --port)") from None
    shown = "localhost" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host and "[" not in host else host
    return f"http://{shown}:{demo.server_port}/"
