"""``depth --save poses``: the camera takes its frames from the run's one decode pass (the video is not decoded a
second time), and its outputs are the same as when it decodes the input itself."""

from __future__ import annotations

import json

from bufferanytime.io.video import VideoSource
from tests.helpers import run_main

FAST = ("--max-res", "42", "-q")


def _counting_decoder(monkeypatch) -> list[int]:
    """Every frame decoded from now on adds 1 to the returned list's only item."""
    decoded = [0]
    raw_frames = VideoSource._raw_frames

    def counted(self):
        for frame in raw_frames(self):
            decoded[0] += 1
            yield frame

    monkeypatch.setattr(VideoSource, "_raw_frames", counted)
    return decoded


def _frames(out) -> int:
    return json.loads((out / "clip" / "depth.meta.json").read_text())["frames"]


def test_poses_decode_the_video_once(small_video, tiny_depth_prior, tmp_path, capsys, monkeypatch):
    decoded = _counting_decoder(monkeypatch)
    code, err = run_main(capsys, "depth", str(small_video), "--model", str(tiny_depth_prior), "-o",
                         str(tmp_path / "out"), "--save", "npz,poses", *FAST)
    assert code == 0, err
    assert (tmp_path / "out" / "clip" / "camera.json").is_file()
    assert decoded[0] == _frames(tmp_path / "out") > 0


def test_poses_from_the_decode_pass_match_a_second_decode(small_video, tiny_depth_prior, tmp_path, capsys,
                                                          monkeypatch):
    from bufferanytime.inference import pipeline

    args = ("depth", str(small_video), "--model", str(tiny_depth_prior), "--save", "poses", *FAST)
    assert run_main(capsys, *args, "-o", str(tmp_path / "one"))[0] == 0
    monkeypatch.setattr(pipeline, "camera_frames", lambda save, staging: None)  # camera_outputs decodes again
    decoded = _counting_decoder(monkeypatch)
    assert run_main(capsys, *args, "-o", str(tmp_path / "two"))[0] == 0
    assert decoded[0] == 2 * _frames(tmp_path / "two") > 0  # the fallback does decode twice
    for name in ("camera.json", "camera_tum.txt"):
        assert (tmp_path / "one" / "clip" / name).read_bytes() == (tmp_path / "two" / "clip" / name).read_bytes()
