"""The same frames make the same mp4 bytes, every time: x264's lookahead is synchronous and its thread count fixed.

Before, the same 6 small frames encoded again and again in one process sometimes gave another file (how often
followed the machine's load: from none to a third of the encodes), which made two runs of the same command write
different visualisations."""

from __future__ import annotations

import hashlib

import av

from bufferanytime.io.video import REPEATABLE_X264, VIS_CODEC_OPTIONS, write_video
from tests.helpers import moving_pattern

ENCODES = 40


def test_the_same_frames_always_make_the_same_mp4(tmp_path):
    frames = list(moving_pattern(frames=6, seed=3))
    digests = set()
    for i in range(ENCODES):
        path = tmp_path / f"v{i % 2}.mp4"
        write_video(path, frames, fps=10, codec_options=VIS_CODEC_OPTIONS)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_the_encoder_runs_with_the_repeatable_settings(tmp_path):
    """x264 writes its settings into the stream: the fixed thread count is in force whatever the machine's CPUs (the
    synchronous lookahead is not among what it writes)."""
    path = tmp_path / "v.mp4"
    write_video(path, list(moving_pattern(frames=6, seed=1)), fps=10, codec_options=VIS_CODEC_OPTIONS)
    with av.open(str(path)) as container:
        first = next(container.demux(container.streams.video[0]))
        text = bytes(first).decode("latin-1")
    assert f"threads={REPEATABLE_X264['threads']} " in text
    assert "sync-lookahead=0" in REPEATABLE_X264["x264-params"]
