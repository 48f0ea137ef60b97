"""The app's request handling without a browser: concurrent requests, session clean-up, limits and messages."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bufferanytime.app.ui import BOTH, EXAMPLE, UPLOAD, Sessions, metrics_markdown, process, user_message
from bufferanytime.errors import InputError
from bufferanytime.io.outputs import write_image
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern


def _clip(path: Path, frames: int = 8, seed: int = 0) -> Path:
    write_video(path, moving_pattern(frames, 64, 96, seed=seed), fps=8)
    return path


def _process(sessions: Sessions, session: str, upload: Path | None, choice: str = "depth", **kw):
    source = UPLOAD if upload else EXAMPLE
    return process(sessions, session, source, str(upload) if upload else None, choice, "", kw.pop("size", None),
                   None, "fp32", **kw)


def test_two_requests_at_once_complete_in_separate_folders(tmp_path):
    sessions = Sessions(tmp_path / "root")
    clips = [_clip(tmp_path / f"clip{i}.mp4", seed=i) for i in range(2)]
    results, errors = {}, []

    def work(i: int) -> None:
        try:
            results[i] = _process(sessions, f"session{i}", clips[i])[0]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and set(results) == {0, 1}
    folders = [results[i].side_by_side.parent for i in range(2)]
    assert folders[0] != folders[1]
    for i in range(2):
        own = sessions.root / f"session{i}"
        paths = [results[i].side_by_side, results[i].time_slice, *results[i].downloads]
        assert all(p.is_file() and own in p.parents for p in paths)  # every file in its own session's folder
        with np.load(results[i].downloads[0]) as npz:
            assert npz["disparity"].shape == (8, 64, 96)
    first = np.load(results[0].downloads[0])["disparity"]
    assert not np.array_equal(first, np.load(results[1].downloads[0])["disparity"])  # each saw its own clip
    sessions.end("session0")
    assert not (sessions.root / "session0").exists() and results[1].side_by_side.is_file()
    sessions.close()
    assert not sessions.root.exists()


def test_bundled_example_scores_both_tasks_against_ground_truth(tmp_path, monkeypatch):
    from bufferanytime.app import work

    monkeypatch.setitem(work.EXAMPLE_VIDEO, "num_frames", 8)  # a small example: the normal model is slow on a CPU
    monkeypatch.setitem(work.EXAMPLE_VIDEO, "size", (96, 128))
    result, status = _process(Sessions(tmp_path / "root"), "s", None, BOTH, size=64)
    assert status == "done: 8 frames, depth, normal" and set(result.metrics) == {"depth", "normal"}
    table = metrics_markdown(result)
    assert "AbsRel" in table and "°" in table  # depth and normal accuracy, with the example's exact ground truth
    assert all(np.isfinite(m["opw"]) for by_label in result.metrics.values() for m in by_label.values())


def test_a_zip_of_frames_is_an_input(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(moving_pattern(4, 64, 96)):
        write_image(frames / f"{i:03d}.png", frame)
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for png in sorted(frames.iterdir()):
            zf.write(png, f"clip/{png.name}")
    result, _ = _process(Sessions(tmp_path / "root"), "s", archive)
    assert result.frames == 4


@pytest.mark.parametrize("case", ["text", "long", "model", "nothing", "zip"])
def test_user_errors_are_one_line_messages(tmp_path, case):
    sessions = Sessions(tmp_path / "root")
    upload, kw = _clip(tmp_path / "clip.mp4", frames=6), {}
    expected = {"text": "notes.mp4: not a readable video", "long": "the video has 6 frames; this app takes at most 4",
                "model": "cannot load a depth model", "nothing": "upload a video or a zip of frames first",
                "zip": "broken.zip: not a readable zip of frames"}[case]
    if case == "text":
        upload = tmp_path / "notes.mp4"
        upload.write_text("not a video")
    elif case == "long":
        kw["max_frames"] = 4
    elif case == "zip":
        upload = tmp_path / "broken.zip"
        upload.write_text("not a zip")
    args = [sessions, "s", UPLOAD, None if case == "nothing" else str(upload), "depth",
            str(tmp_path) if case == "model" else "", None, None, "fp32"]
    with pytest.raises(InputError) as info:
        process(*args, **kw)
    message = user_message(info.value)
    assert expected in message and "\n" not in message and str(sessions.root) not in message


def test_each_column_of_the_side_by_side_has_its_own_colour_range():
    """The per-frame prior and the video model are on different scales: each column still spans its colours."""
    from bufferanytime.app.work import side_by_side
    from bufferanytime.tasks import get_task

    frames = moving_pattern(4, 32, 48)
    ramp = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (4, 32, 1))
    video = side_by_side(get_task("depth"), frames, {"per-frame prior": ramp * 100 + 5, "video model": ramp})
    assert video.shape == (4, 32, 48 * 3, 3)
    prior, model = video[..., 48:96, :], video[..., 96:, :]
    assert np.array_equal(prior, model)  # same picture up to scale: same colours, neither column flat
    assert prior.std() > 50
