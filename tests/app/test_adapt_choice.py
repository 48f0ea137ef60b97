"""The app's "adapt to this video first" choice, through the Run button's handler, without a browser."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bufferanytime.adapt import run as adapt_run
from bufferanytime.app.ui import UPLOAD, Sessions, build_app
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern, one_torch_thread


@pytest.fixture(scope="module")
def on_run(tmp_path_factory):
    """The Run button's handler of a built page (not served), and the root of its request folders."""
    sessions = Sessions(tmp_path_factory.mktemp("root"))
    demo = build_app(sessions)
    handler = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "on_run")
    yield handler
    sessions.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, moving_pattern(12, 64, 96), fps=8)
    return path


def _click(on_run, clip: Path, adapt: bool, budget: str, reports: list):
    """The page's values in the order of its controls: input, upload, buffer, model, first, stride, adapt,
    budget, then the inference options (input size, window, precision)."""
    progress = lambda fraction, desc: reports.append((fraction, desc))  # noqa: E731 - Gradio's progress call
    with one_torch_thread():
        return on_run(SimpleNamespace(session_hash="s"), progress, UPLOAD, str(clip), "depth", None, 0, 1, adapt,
                      budget, 0, 0, "fp32")


def test_adapt_first_shows_its_progress_and_opw_before_and_after(on_run, clip, monkeypatch):
    monkeypatch.setattr(adapt_run, "MIN_IMPROVEMENT", -1.0)  # each validation improves: the guard rails decide
    reports: list = []
    outputs = _click(on_run, clip, True, "2steps", reports)  # status, video, metrics, ..., downloads, session
    status, video, metrics, downloads = *outputs[:3], outputs[-2]
    assert status.startswith("done: 12 frames"), status
    assert Path(video).is_file() and downloads
    texts = [text for _, text in reports]
    assert {f"depth: adapting to this video, step {k} of 2" for k in (1, 2)} <= set(texts)
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions)  # one bar, moving forward through the adaptation
    line = metrics.splitlines()[-1]
    assert line.startswith("**depth: adapted to this video** (2 steps, budget 2steps): OPW on its held-out part ")
    before, after = line.split("held-out part ")[1].split(";")[0].split(" → ")
    assert float(before) > 0 and float(after) > 0
    assert "model is shown" in line


def test_a_bad_budget_is_a_message_before_any_work(on_run, clip):
    reports: list = []
    status, video = _click(on_run, clip, True, "soon", reports)[:2]
    assert status.startswith("error: adaptation budget 'soon': cannot read it") and video is None
    assert reports == []


def test_unticked_the_budget_is_not_read(on_run, clip):
    reports: list = []
    status, _, metrics = _click(on_run, clip, False, "soon", reports)[:3]
    assert status.startswith("done:") and "adapted to this video" not in metrics
    assert not any("adapting" in text for _, text in reports)
