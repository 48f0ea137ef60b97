"""The app's request handling without a browser: concurrent requests, session clean-up, limits and messages."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

from bufferanytime.app.access import ModelAccess, is_local
from bufferanytime.app.ui import BOTH, EXAMPLE, UPLOAD, Sessions, metrics_markdown, process, user_message
from bufferanytime.errors import InputError
from bufferanytime.io.outputs import write_image
from bufferanytime.io.video import write_video
from bufferanytime.models import list_models
from tests.helpers import moving_pattern


def _clip(path: Path, frames: int = 8, seed: int = 0) -> Path:
    write_video(path, moving_pattern(frames, 64, 96, seed=seed), fps=8)
    return path


def _process(sessions: Sessions, session: str, upload: Path | None, choice: str = "depth", model: str = "", **kw):
    source = UPLOAD if upload else EXAMPLE
    return process(sessions, session, source, str(upload) if upload else None, choice, model, kw.pop("size", None),
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
        t.join(timeout=900)  # a bound for a hang only: the join ends when the request does
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
    _assert_the_3d_files(result)


def _assert_the_3d_files(result) -> None:
    """The depth run's 3D view file holds the fused cloud and the camera's path; the 3D downloads open."""
    import trimesh

    scene = trimesh.load(result.scene)
    kinds = {type(g).__name__ for g in scene.geometry.values()}
    assert kinds == {"PointCloud", "Path3D"}, kinds
    files = {p.name: p for p in result.downloads}
    assert {"fused.ply", "fused.glb", "camera.json", "colmap.zip", "nerfstudio.zip"} <= set(files)
    assert len(trimesh.load(files["fused.ply"]).vertices) > 100
    with zipfile.ZipFile(files["colmap.zip"]) as zf:
        assert {"colmap/sparse/0/cameras.txt", "colmap/sparse/0/images.txt"} <= set(zf.namelist())
    with zipfile.ZipFile(files["nerfstudio.zip"]) as zf:
        assert len(json.loads(zf.read("nerfstudio/transforms.json"))["frames"]) > 1


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


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                             ("[::1]", True), ("127.0.0.2", True), ("0.0.0.0", False),
                                             ("::", False), ("192.168.1.5", False), ("example.org", False)])
def test_which_hosts_serve_this_machine_only(host, local):
    assert is_local(host) is local


@pytest.mark.parametrize("model", ["/etc", "/", "../../etc", "org/name", "/nonexistent"])
def test_beyond_this_machine_a_path_is_refused_without_looking_at_it(tmp_path, model, monkeypatch):
    """A visitor's path is refused before any file is read: the message is the same whether it exists or not, and
    it names what the page offers."""
    import bufferanytime.models as models

    def no_loading(*args, **kwargs):
        raise AssertionError("a refused model must not be looked up")

    monkeypatch.setattr(models, "load_model", no_loading)
    sessions = Sessions(tmp_path / "root")
    access = ModelAccess([], open_paths=False)
    with pytest.raises(InputError) as info:
        process(sessions, "s", EXAMPLE, None, "depth", model, None, None, "fp32", access=access)
    message = user_message(info.value, access)
    assert message == f"this page loads only the models it offers: {', '.join(list_models())}"
    assert not any(sessions.root.iterdir())  # refused before any work


def test_beyond_this_machine_the_operators_directories_are_offered_by_name(tmp_path, tiny_depth_prior):
    sessions = Sessions(tmp_path / "root")
    access = ModelAccess([tiny_depth_prior], open_paths=False)
    assert access.choices() == [*list_models(), tiny_depth_prior.name]
    result, status = _process(sessions, "s", _clip(tmp_path / "clip.mp4", frames=4), model=tiny_depth_prior.name,
                              access=access)
    assert status == "done: 4 frames, depth" and result.downloads[0].is_file()
    with pytest.raises(InputError, match="loads only the models it offers"):  # its server path is no way in
        _process(sessions, "s", tmp_path / "clip.mp4", model=str(tiny_depth_prior), access=access)


def test_beyond_this_machine_errors_name_no_server_path(tmp_path):
    """An operator's directory that holds no model: the message names it by its label, and no path of the server
    (the directory, the request folders, the embedded weights) reaches the page."""
    broken = tmp_path / "operator" / "broken-model"
    broken.mkdir(parents=True)
    sessions = Sessions(tmp_path / "root")
    access = ModelAccess([broken], open_paths=False)
    with pytest.raises(InputError) as info:
        _process(sessions, "s", _clip(tmp_path / "clip.mp4", frames=4), model="broken-model", access=access)
    message = user_message(info.value, access)
    assert message.startswith("broken-model: cannot load a depth model") and "\n" not in message
    assert str(tmp_path) not in message and "/" not in message.replace("a/b", "")
    unexpected = user_message(OSError(f"{sessions.root}/s/x/depth.npz: disk trouble"), access)
    assert unexpected == "internal error (OSError: depth.npz: disk trouble); see the server's log"


def test_on_this_machine_any_path_is_tried_and_named(tmp_path):
    """Served on this machine only, the operator's own paths load as on the command line, and a failure names
    the path given, in one line."""
    sessions = Sessions(tmp_path / "root")
    with pytest.raises(InputError) as info:
        _process(sessions, "s", _clip(tmp_path / "clip.mp4", frames=4), model="/etc")
    message = user_message(info.value, ModelAccess())
    assert message.startswith("/etc: cannot load a depth model") and "\n" not in message
    assert str(sessions.root) not in message


def test_a_clip_longer_than_the_limit_can_be_cut_to_its_first_frames_or_strided(tmp_path):
    sessions = Sessions(tmp_path / "root")
    clip = _clip(tmp_path / "clip.mp4", frames=9)
    with pytest.raises(InputError) as info:
        _process(sessions, "s", clip, max_frames=4)
    assert str(info.value) == ("clip.mp4: the video has 9 frames; this app takes at most 4: set 'First frames' to 4, "
                               "or 'Every Nth frame' to 3 (or run `bufferanytime depth` on the command line)")
    result, status = _process(sessions, "s", clip, max_frames=4, first=4)
    assert status == "done: 4 of 9 frames (first 4), depth" and result.frames == 4
    result, status = _process(sessions, "s", clip, max_frames=4, stride=3)
    assert status == "done: 3 of 9 frames (every 3rd), depth"
    with np.load(result.downloads[0]) as npz:
        assert npz["disparity"].shape == (3, 64, 96)
    with av.open(str(result.side_by_side)) as video:  # time runs as in the clip: 8 fps over a stride of 3
        assert abs(float(video.streams.video[0].average_rate) - 8 / 3) < 0.01
    with pytest.raises(InputError, match="must be whole numbers >= 1"):
        _process(sessions, "s", clip, stride=0)


def test_the_bundled_example_is_long_and_large_enough_to_show_flicker_and_rendered_once(monkeypatch):
    from bufferanytime import synthetic
    from bufferanytime.app import work

    assert work.EXAMPLE_VIDEO["num_frames"] >= 60 and work.EXAMPLE_VIDEO["size"] >= (240, 320)
    assert work.EXAMPLE_VIDEO["num_frames"] / work.EXAMPLE_FPS >= 4  # seconds per loop
    monkeypatch.setitem(work.EXAMPLE_VIDEO, "num_frames", 6)
    monkeypatch.setitem(work.EXAMPLE_VIDEO, "size", (64, 96))
    calls = []
    original = synthetic.render_video
    monkeypatch.setattr(synthetic, "render_video", lambda *a, **kw: calls.append(kw) or original(*a, **kw))
    first = work.example_video(max_frames=5)  # an operator's --max-frames below the example's length
    assert work.example_video(max_frames=5) is first and len(calls) == 1  # the second request reuses it
    assert first.rgb.shape == (5, 64, 96, 3) and first.depth.shape == (5, 64, 96)


def test_a_page_served_beyond_this_machine_says_which_models_it_loads(tmp_path, tiny_depth_prior):
    from bufferanytime.app.ui import build_app

    restricted = build_app(Sessions(tmp_path / "a"), access=ModelAccess([tiny_depth_prior], open_paths=False))
    local = build_app(Sessions(tmp_path / "b"))
    for demo, custom in ((restricted, False), (local, True)):
        props = [block.get_config() for block in demo.blocks.values()]
        box = next(p for p in props if p.get("elem_id") == "model")
        text = " ".join(str(p.get("value")) for p in props if p.get("name") == "markdown")
        assert box["allow_custom_value"] is custom
        if custom:
            assert "a local directory or a Hugging Face id" in box["label"] and "operator" not in text
        else:
            assert [choice[0] for choice in box["choices"]] == [*list_models(), tiny_depth_prior.name]
            assert "offers its embedded models and the ones its operator lists" in box["label"]
            assert "other paths are refused" in text and str(tiny_depth_prior) not in str(props)
