"""`bufferanytime depth --model PRIOR FRAMES_DIR` on a prior of a family that makes metric depth only (a checkpoint
of it serves nothing else): the command routes it by its task and writes metres under the metric names, never a
disparity file. Runs over every such registered family; nothing here names one."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bufferanytime.families import get_family, list_families
from bufferanytime.tasks import METRIC_DEPTH
from tests.helpers import moving_pattern, run_main

METRIC_ONLY = [name for name in list_families() if get_family(name).tasks == (METRIC_DEPTH,)]
FRAMES, HEIGHT, WIDTH = 4, 48, 64


@pytest.fixture()
def frames_dir(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(moving_pattern(FRAMES, HEIGHT, WIDTH)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame[..., ::-1])
    return folder


@pytest.mark.parametrize("name", METRIC_ONLY)
def test_depth_command_writes_metres_for_a_metric_only_family(capsys, name, frames_dir, tmp_path, one_torch_thread):
    prior = get_family(name).make_tiny_prior(tmp_path / "prior")
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(frames_dir), "--model", str(prior), "--short-side", str(HEIGHT),
                         "--save", "npz", "-o", str(out), "-q")
    assert code == 0, err
    folder = out / frames_dir.name
    assert sorted(p.name for p in folder.iterdir()) == ["metric_depth.meta.json", "metric_depth.npz"]
    meta = json.loads((folder / "metric_depth.meta.json").read_text())
    assert meta["task"] == METRIC_DEPTH.name and meta["units"] == "metres"
    with np.load(folder / "metric_depth.npz") as npz:
        assert list(npz.keys()) == ["depth"]
        depth = npz["depth"]
    assert depth.shape == (FRAMES, HEIGHT, WIDTH) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert float(depth.min()) > 0  # metres in front of the camera
    assert float(depth.max()) - float(depth.min()) > 0.01  # an informative prior: depth varies over the image
