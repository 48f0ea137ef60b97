"""The same frames make the same mp4 bytes, every time: x264's lookahead is synchronous, its thread count fixed (one
frame thread, or a fixed number of slice threads for visualisations), and on a CPU with AVX-512 its assembly stops
at AVX2.

Before, the same 6 small frames encoded again and again in one process sometimes gave another file (how often
followed the machine's load: from none to a third of the encodes), which made two runs of the same command write
different visualisations. Then a quarter of fresh processes still wrote another file of the same frames: x264's
AVX-512 kernels read heap memory that was never written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import av
import pytest

from bufferanytime.io.video import REPEATABLE_X264, VIS_CODEC_OPTIONS, VIS_SLICES, write_video
from tests.helpers import moving_pattern

ENCODES = 40
SLICED_ROWS = 128  # tall enough for x264 to cut each frame into VIS_SLICES slices (8 macroblock rows or more)
# Encodes colour-mapped smooth random fields (what a depth visualisation looks like; with AVX-512, 3 of these 4 gave
# another file by what the heap held) and prints their digests.
ENCODE_FIELDS = """
import hashlib, sys
import cv2, numpy as np
from bufferanytime.io.video import VIS_CODEC_OPTIONS, write_video
for seed in range(4):
    rng = np.random.default_rng(seed)
    fields = rng.random((6, 8, 10)).astype(np.float32)
    frames = []
    for t in range(6):
        field = cv2.resize(fields[t] * 0.3 + fields[0] * 0.7, (96, int(sys.argv[2])), interpolation=cv2.INTER_CUBIC)
        grey = np.clip(field * 255, 0, 255).astype(np.uint8)
        frames.append(cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB))
    path = sys.argv[1] + f"/{seed}.mp4"
    write_video(path, frames, fps=10, codec_options=VIS_CODEC_OPTIONS)
    print(hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


@pytest.mark.parametrize("rows", [48, SLICED_ROWS])
def test_the_same_frames_always_make_the_same_mp4(tmp_path, rows):
    frames = list(moving_pattern(frames=6, height=rows, width=96, seed=3))
    digests = set()
    for i in range(ENCODES):
        path = tmp_path / f"v{i % 2}.mp4"
        write_video(path, frames, fps=10, codec_options=VIS_CODEC_OPTIONS)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def _x264_settings(path) -> str:
    """The settings x264 wrote into the stream's first packet."""
    with av.open(str(path)) as container:
        return bytes(next(container.demux(container.streams.video[0]))).decode("latin-1")


def test_the_encoder_runs_with_the_repeatable_settings(tmp_path):
    """x264 writes its settings into the stream: the fixed thread counts are in force whatever the machine's CPUs
    (the synchronous lookahead is not among what it writes)."""
    frames = list(moving_pattern(frames=6, height=SLICED_ROWS, width=96, seed=1))
    write_video(tmp_path / "plain.mp4", frames, fps=10)
    assert f" threads={REPEATABLE_X264['threads']} " in _x264_settings(tmp_path / "plain.mp4")
    write_video(tmp_path / "vis.mp4", frames, fps=10, codec_options=VIS_CODEC_OPTIONS)
    text = _x264_settings(tmp_path / "vis.mp4")
    assert f" threads={VIS_SLICES} " in text and " sliced_threads=1 " in text
    assert "sync-lookahead=0" in REPEATABLE_X264["x264-params"]


@pytest.mark.parametrize("rows", [48, SLICED_ROWS])
def test_what_the_heap_held_before_does_not_change_the_bytes(tmp_path, rows):
    """Fresh processes whose new heap memory is filled with different bytes (glibc's MALLOC_PERTURB_; ignored
    elsewhere) write the same files."""
    digests = set()
    for fill in ("0", "85", "165"):
        folder = tmp_path / fill
        folder.mkdir()
        env = {**os.environ, "MALLOC_PERTURB_": fill}
        done = subprocess.run([sys.executable, "-c", ENCODE_FIELDS, str(folder), str(rows)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout)
    assert len(digests) == 1
