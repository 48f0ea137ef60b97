"""Fixtures of the training tests: flickering synthetic clips and a tiny training configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bufferanytime.synthetic import render_video, write_video_dir
from bufferanytime.training import TrainConfig
from tests.helpers import one_torch_thread

FLICKER = 0.3
SIZE = (48, 64)
FRAMES = 8


@pytest.fixture(name="one_torch_thread", scope="module", autouse=True)
def _one_torch_thread_per_module():
    """One torch thread for the whole module (see :func:`tests.helpers.one_torch_thread`). Module scope: set
    before the module's own fixtures, since runs compared bit for bit must use the same thread count."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def flicker_data(tmp_path_factory) -> Path:
    """Three synthetic sequences (8 frames, 48x64) with light flicker, in the `bufferanytime synth` layout."""
    root = tmp_path_factory.mktemp("flicker")
    for seed in range(3):
        write_video_dir(render_video(seed, FRAMES, SIZE, flicker=FLICKER), root / f"seq_{seed:06d}")
    return root


def tiny_config(data: Path, model: Path, out: Path, **overrides) -> TrainConfig:
    """A CPU run small enough for the test suite (4-frame clips at 42x56, no warm-up, no workers)."""
    options = {
        "kind": "depth",
        "data": [str(data)],
        "model": str(model),
        "out": str(out),
        "steps": 4,
        "clip_len": 4,
        "res": (42, 56),
        "warmup": 0,
        "lr": 1e-3,
        "ema": 0.5,
        "workers": 0,
        "cpu": True,
        "quiet": True,
        # The random prior's disparity has Canny edges almost everywhere (the radius-3 mask keeps ~0.2 % of the
        # pixels), which would leave the stabilization loss nearly empty at these sizes.
        "edge_mask": False,
    }
    options.update(overrides)
    return TrainConfig(**options)
