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
from pathlib import Path

from bufferanytime.app.work import LABELS, MAX_FRAMES, Progress, Request, Result, run
from bufferanytime.errors import InputError
from bufferanytime.io.video import VIDEO_EXTENSIONS
from bufferanytime.tasks import get_task, list_tasks

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
import gradio as gr  # noqa: E402 - after the setting above; module level, so Gradio resolves the gr.Request hints

MAX_UPLOAD = "200mb"
CONCURRENCY = 1  # requests run at once (each uses every core); others wait in the queue
QUEUE_SIZE = 16
EXAMPLE = "bundled example (synthetic, with ground truth)"
UPLOAD = "uploaded file"
BOTH = "both"
PRECISION_CHOICES = ("fp32", "bf16", "fp16")


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


def metrics_markdown(result: Result) -> str:
    """The numbers as a Markdown table: OPW (lower is steadier) and, with ground truth, the accuracy."""
    has_truth = any("accuracy" in m for by_label in result.metrics.values() for m in by_label.values())
    header = "| task | model | OPW ↓ |" + (" accuracy |" if has_truth else "")
    lines = [header, "|---|---|---:|" + ("---|" if has_truth else "")]
    for name, by_label in result.metrics.items():
        for label in LABELS:
            m = by_label[label]
            lines.append(f"| {name} | {label} | {m['opw']:.4f} |" + (f" {m['accuracy']} |" if has_truth else ""))
    return "\n".join(lines)


def process(sessions: Sessions, session: str, source: str, upload: str | None, choice: str, model: str,
            size: float | None, window: float | None, precision: str, max_frames: int = MAX_FRAMES,
            progress: Progress | None = None) -> tuple[Result, str]:
    """One request in its own folder of ``session``: the result and its status line; InputError when unusable."""
    if source != EXAMPLE and not upload:
        raise InputError("upload a video or a zip of frames first, or choose the bundled example")
    request = Request(input=None if source == EXAMPLE else Path(upload), tasks=task_names(choice),
                      model=(model or "").strip() or None, max_res=_optional_int(size),
                      window=_optional_int(window), precision=precision, max_frames=max_frames)
    folder = sessions.new_request(session)
    try:
        result = run(request, folder, progress or (lambda fraction, text: None))
    except InputError as exc:  # the page names the user's file, not the server's folders
        message = str(exc).replace(f"{folder}/", "")
        raise InputError(message.replace(str(upload), Path(upload).name) if upload else message) from exc
    return result, f"done: {result.frames} frames, {', '.join(request.tasks)}"


def user_message(exc: BaseException) -> str:
    """The one line the page shows for a failure; anything unexpected is also logged here in full."""
    if isinstance(exc, InputError):
        return str(exc)
    traceback.print_exception(exc, file=sys.stderr)
    return f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); see the log"


def _inputs(models: list[str]) -> dict:
    """The input widgets, by the name of the ``process`` argument they feed."""
    with gr.Column():
        source = gr.Radio([UPLOAD, EXAMPLE], value=UPLOAD, label="Input")
        upload = gr.File(label="A video (.mp4, .mov, ...) or a zip of frames", type="filepath",
                         file_types=[*sorted(VIDEO_EXTENSIONS), ".zip"], elem_id="upload")
        choice = gr.Radio([*list_tasks(), BOTH], value=list_tasks()[0], label="Buffer")
        model = gr.Dropdown(models, value=models[0] if models else None, allow_custom_value=True,
                            label="Model: an embedded name, a local directory or a Hugging Face id")
        with gr.Row():
            size = gr.Number(0, label="Input size (long side, px; 0: the model's own)", precision=0, minimum=0,
                             elem_id="size")
            window = gr.Number(0, label="Window (frames; 0: the model's own)", precision=0, minimum=0)
            precision = gr.Radio(list(PRECISION_CHOICES), value="fp32", label="Precision")
        button = gr.Button("Run", variant="primary", elem_id="run")
    return {"button": button, "args": [source, upload, choice, model, size, window, precision]}


def _outputs() -> list:
    """The output widgets, in the order ``on_run`` returns their values."""
    with gr.Column():
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        video = gr.Video(label="input | per-frame prior | video model (each column its own colour range)",
                         elem_id="result_video", interactive=False, autoplay=True, loop=True)
        metrics = gr.Markdown(elem_id="metrics")
        slice_image = gr.Image(label="Time slice: one column over time (flicker shows as vertical stripes)",
                               type="filepath", elem_id="time_slice", interactive=False)
        downloads = gr.File(label="Downloads: npz, 16-bit PNG zip, EXR zip", file_count="multiple",
                            elem_id="downloads", interactive=False)
    return [status, video, metrics, slice_image, downloads]


def build_app(sessions: Sessions | None = None, max_frames: int = MAX_FRAMES) -> gr.Blocks:
    """The Gradio Blocks of the app (not started); ``sessions`` holds the request folders."""
    from bufferanytime.models import list_models

    sessions = sessions or Sessions()

    def on_run(source, upload, choice, model, size, window, precision, request: gr.Request,
               progress=gr.Progress()):  # noqa: B008 - how Gradio injects its progress bar
        def report(fraction: float, text: str) -> None:
            progress(fraction, desc=text)

        args = (source, upload, choice, model, size, window, precision)
        try:
            result, status = process(sessions, request.session_hash, *args, max_frames=max_frames, progress=report)
        except Exception as exc:  # every failure is a message in the page
            return f"error: {user_message(exc)}", None, "", None, None, request.session_hash
        return (status, str(result.side_by_side), metrics_markdown(result), str(result.time_slice),
                [str(p) for p in result.downloads], request.session_hash)

    def on_unload(request: gr.Request) -> None:
        sessions.end(request.session_hash)

    with gr.Blocks(title="Buffer Anytime", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown("# Buffer Anytime\nTemporally consistent video depth and normals from a single-image prior: "
                    f"the per-frame prior beside the video model. Inputs up to {max_frames} frames.")
        session = gr.State(None, delete_callback=sessions.end)
        with gr.Row():
            inputs = _inputs(list_models())
            outputs = _outputs()
        inputs["button"].click(on_run, inputs["args"], [*outputs, session], concurrency_limit=CONCURRENCY)
        demo.unload(on_unload)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> tuple:
    """Serve ``demo`` on ``host:port`` (no share link, no analytics, no server-side rendering)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # system fonts: nothing fetched
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_UPLOAD, ssr_mode=False,
                       prevent_thread_lock=not block, quiet=not block, theme=theme, show_error=False,
                       footer_links=[], mcp_server=False)
