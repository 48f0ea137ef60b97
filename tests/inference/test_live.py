"""run_stream: online mode from Python on a file, a pipe or the caller's own frames; the meta it returns is the meta
file; ends by max_frames, by a stop event (also while the source waits for a frame), by an interrupt and by bad
frames, each with every written frame whole, the mp4 finalised and the meta file saying how the run ended."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.inference import FrameSource, InferenceSettings, OnlinePredictor, run_stream
from bufferanytime.io.streams import open_live
from bufferanytime.models import load_model
from tests.helpers import one_torch_thread
from tests.io.live_feeds import PipeFeeder, frames, y4m

SETTINGS = {"max_res": 42, "window": 3, "device": "cpu"}
WAIT = 300  # seconds: reached only when a stop request goes unnoticed (a margin for a slow machine)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def model(tiny_depth_prior):
    return load_model("depth", str(tiny_depth_prior))


def _settings(**changes) -> InferenceSettings:
    return InferenceSettings(**{**SETTINGS, **changes})


def _npy(folder: Path) -> list[Path]:
    return sorted((folder / "depth_online_npy").glob("*.npy"))


def _mp4_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _meta_file(folder: Path) -> dict:
    return json.loads((folder / "depth_online.meta.json").read_text())


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_a_y4m_file_gives_every_output_and_the_meta_it_returns(model, tmp_path):
    (tmp_path / "clip.y4m").write_bytes(y4m(frames(5, 28, 42)))
    folder = tmp_path / "out" / "clip"
    meta = run_stream(model, str(tmp_path / "clip.y4m"), folder, _settings(save=("npy", "png16", "vis")),
                      {"name": "tiny"}, progress=False)
    assert [p.name for p in _npy(folder)] == [f"{i:06d}.npy" for i in range(5)]
    assert all(np.load(p).shape == (28, 42) and np.isfinite(np.load(p)).all() for p in _npy(folder))
    assert len(list((folder / "depth_online_png16").glob("*.png"))) == 5
    assert _mp4_frames(folder / "depth_online_vis.mp4") == 5
    assert sorted(p.name for p in folder.iterdir()) == ["depth_online.meta.json", "depth_online_npy",
                                                        "depth_online_png16", "depth_online_vis.mp4"]
    assert meta == _meta_file(folder)
    assert meta["status"] == "finished" and meta["frames_written"] == 5 and meta["frames_read"] == 5
    assert meta["model"]["name"] == "tiny" and meta["model"]["online_mode"] == "rolling"
    assert meta["model"]["window"] == 3 and meta["source"]["kind"] == "file" and meta["input_size"] == [28, 42]


def test_the_callers_frames_give_what_the_same_frames_from_a_file_give(model, tmp_path):
    """A FrameSource of the frames a y4m file decodes to: the same results, the callback once per frame."""
    (tmp_path / "clip.y4m").write_bytes(y4m(frames(4, 28, 42)))
    run_stream(model, str(tmp_path / "clip.y4m"), tmp_path / "file", _settings(), progress=False)
    steps = []
    meta = run_stream(model, FrameSource(_decoded(tmp_path / "clip.y4m"), fps=10, name="mine"), tmp_path / "mine",
                      _settings(), progress=False, on_frame=steps.append)
    assert [(s.index, s.written, s.dropped) for s in steps] == [(i, i + 1, 0) for i in range(4)]
    from_file, from_memory = _npy(tmp_path / "file"), _npy(tmp_path / "mine")
    assert [p.name for p in from_file] == [p.name for p in from_memory]
    for a, b, step in zip(from_file, from_memory, steps, strict=True):
        np.testing.assert_array_equal(np.load(a), np.load(b))
        np.testing.assert_array_equal(np.load(b), step.prediction)
    assert meta["source"] == {"spec": "mine", "kind": "frames", "format": None, "fps": 10, "options": {}}
    assert _mp4_frames(tmp_path / "mine" / "depth_online_vis.mp4") == 4


def test_max_frames_ends_an_endless_source_as_finished(model, tmp_path):
    endless = itertools.cycle(frames(3, 28, 42))
    meta = run_stream(model, FrameSource(endless), tmp_path / "out", _settings(), progress=False, max_frames=4,
                      stride=2)
    assert [p.name for p in _npy(tmp_path / "out")] == ["000000.npy", "000002.npy", "000004.npy", "000006.npy"]
    assert meta["status"] == "finished" and meta["frames_written"] == 4 and meta == _meta_file(tmp_path / "out")
    assert _mp4_frames(tmp_path / "out" / "depth_online_vis.mp4") == 4


def test_a_stop_event_ends_a_stream_that_waits_for_its_next_frame(model, tmp_path):
    """Three frames into a pipe held open: the run waits for a fourth until another thread sets stop; it then ends
    at once (not at the stall timeout) with the three results whole and the meta file saying ``stopped``."""
    feeder = PipeFeeder(tmp_path / "pipe", [y4m(frames(3, 28, 42))], hold=WAIT)
    feeder.start()
    three, stop = threading.Event(), threading.Event()
    setter = threading.Thread(target=lambda: three.wait(WAIT) and stop.set(), daemon=True)
    setter.start()
    source = open_live(str(tmp_path / "pipe"), stall_timeout=WAIT)
    folder = tmp_path / "out"
    try:
        meta = run_stream(model, source, folder, _settings(), progress=False, stop=stop,
                          on_frame=lambda step: step.written == 3 and three.set())
    finally:
        feeder.stop()
    assert meta["status"] == "stopped" and meta["frames_written"] == 3 and meta == _meta_file(folder)
    assert len(_npy(folder)) == 3 and all(np.load(p).shape == (28, 42) for p in _npy(folder))
    assert _mp4_frames(folder / "depth_online_vis.mp4") == 3


def test_a_stop_before_the_first_frame_writes_nothing(model, tmp_path):
    stop = threading.Event()
    stop.set()
    meta = run_stream(model, FrameSource(frames(3, 28, 42)), tmp_path / "out", _settings(), progress=False,
                      stop=stop)
    assert meta["status"] == "stopped" and meta["frames_written"] == 0
    assert not (tmp_path / "out").exists()


def test_an_interrupt_keeps_every_written_frame_and_says_so(model, tmp_path):
    def interrupt(step) -> None:
        if step.written == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stream(model, FrameSource(frames(5, 28, 42)), tmp_path / "out", _settings(), progress=False,
                   on_frame=interrupt)
    meta = _meta_file(tmp_path / "out")
    assert meta["status"] == "interrupted" and meta["frames_written"] == 2
    assert len(_npy(tmp_path / "out")) == 2 and _mp4_frames(tmp_path / "out" / "depth_online_vis.mp4") == 2


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((36, 48, 3), np.uint8), "frames: frame size changed mid-stream from 42x28 to 48x36 at frame 2"),
    (np.zeros((28, 42), np.uint8), "frames: frame 2 is uint8 (28, 42), expected (H, W, 3) uint8 RGB"),
])
def test_a_bad_frame_is_one_error_and_the_frames_before_stay(model, tmp_path, bad, message):
    with pytest.raises(InputError) as error:
        run_stream(model, FrameSource([*frames(2, 28, 42), bad]), tmp_path / "out", _settings(), progress=False)
    assert str(error.value) == message
    assert len(_npy(tmp_path / "out")) == 2 and _mp4_frames(tmp_path / "out" / "depth_online_vis.mp4") == 2
    assert _meta_file(tmp_path / "out")["status"] == f"failed: {message}"


def test_a_source_without_frames_raises_and_writes_nothing(model, tmp_path):
    with pytest.raises(InputError, match="frames: the stream ended before its first frame; nothing was written"):
        run_stream(model, FrameSource([]), tmp_path / "out", _settings(), progress=False)
    assert not (tmp_path / "out").exists()


def test_formats_not_written_online_are_refused_before_anything(model, tmp_path):
    with pytest.raises(InputError, match="--save npz: not written online"):
        run_stream(model, FrameSource(frames(2, 28, 42)), tmp_path / "out", _settings(save=("npz", "png16")))
    assert not (tmp_path / "out").exists()


def test_an_online_predictor_is_reset_for_each_stream(model, tmp_path):
    """The same predictor for two streams: the second starts afresh and gives the first one's results."""
    predictor = OnlinePredictor(model, "rolling", "cpu", window=3)
    images = frames(3, 28, 42)
    for name in ("a", "b"):
        run_stream(predictor, FrameSource(images), tmp_path / name, _settings(max_res=42), progress=False)
    for a, b in zip(_npy(tmp_path / "a"), _npy(tmp_path / "b"), strict=True):
        np.testing.assert_array_equal(np.load(a), np.load(b))
