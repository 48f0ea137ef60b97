"""Fixtures of the adapt tests: short flickering synthetic videos, a static one and a too short one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import one_torch_thread

SIZE = (48, 64)
FRAMES = 16


@pytest.fixture(name="one_torch_thread", scope="module", autouse=True)
def _one_torch_thread_per_module():
    """One torch thread for the whole module: tiny tensors gain nothing from more on a shared machine."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[Path]:
    """Three synthetic videos of 16 frames (48x64) with flicker: an mp4 and two frame folders."""
    root = tmp_path_factory.mktemp("adapt-clips")
    out = []
    for seed in range(3):
        folder = write_video_dir(render_video(100 + seed, FRAMES, SIZE, flicker=0.3), root / f"seq_{seed}")
        out.append(folder / "rgb.mp4" if seed == 0 else folder / "rgb")
    return out


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    """``(T, H, W, 3)`` uint8 RGB frames as PNG files in ``folder``."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.ascontiguousarray(frame[..., ::-1]))
    return folder


@pytest.fixture()
def static_clip(tmp_path) -> Path:
    """Twelve identical frames."""
    frame = render_video(7, 1, SIZE).rgb[0]
    return write_frames(tmp_path / "static", np.repeat(frame[None], 12, axis=0))


@pytest.fixture()
def short_clip(tmp_path) -> Path:
    """Six frames: fewer than a clip to train on and one to hold out."""
    return write_frames(tmp_path / "short", render_video(8, 6, SIZE, flicker=0.3).rgb)


@pytest.fixture()
def interrupt_at_step(monkeypatch):
    """``interrupt_at_step(n)``: the n-th training step from then on raises KeyboardInterrupt, as Ctrl-C (or SIGTERM,
    under the command line) does; the steps before and after it run as usual."""
    from bufferanytime.adapt import run

    def arm(n: int) -> None:
        real_step, calls = run.Session.step, []

        def step(self, clip):
            calls.append(clip)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real_step(self, clip)

        monkeypatch.setattr(run.Session, "step", step)

    return arm
