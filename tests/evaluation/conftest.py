"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

import pytest

from bufferanytime.synthetic import render_video, write_video_dir


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """Two tiny flickering synthetic videos with exact ground truth (rendered once per test module)."""
    root = tmp_path_factory.mktemp("synthetic")
    for seed in (0, 1):
        write_video_dir(render_video(seed, 4, (32, 48), flicker=0.2), root / f"seq_{seed:06d}")
    return root
