"""OPW of the error: zero for the exact answer under any camera motion, raised by flicker and by flattened motion.

OPW itself scores the exact depth of a camera moving forward at its floor (the ground truth's own OPW), and a model
that flattens that motion below it; the error's OPW tells the two apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bufferanytime.evaluation.consistency import SequenceFlows, opw
from bufferanytime.evaluation.runner import error_opw
from bufferanytime.flow.warp import warp
from bufferanytime.synthetic import render_video
from bufferanytime.tasks import get_task

SIZE = (48, 64)


@pytest.fixture(scope="module", params=[3, 4, 5])
def dolly(request):
    video = render_video(request.param, 6, SIZE, camera="dolly", objects="static")
    flows = SequenceFlows.from_flows(np.moveaxis(video.flow_fwd, -1, 1), np.moveaxis(video.flow_bwd, -1, 1),
                                     video.flow_valid_fwd, video.flow_valid_bwd, method="ground truth")
    return np.asarray(video.depth, np.float64), np.asarray(video.normal, np.float64), flows


def _depth_error(task_name: str, pred: np.ndarray, depth: np.ndarray, flows: SequenceFlows) -> tuple[float, float]:
    """(OPW of the error, OPW) of a depth prediction, with the evaluation's alignment."""
    task = get_task(task_name)
    metrics = task.score(pred, depth, "synthetic")
    return error_opw(task, pred, depth, flows, metrics, "synthetic")["opw_err"], opw(pred, flows=flows, task=task)


def _flattened(disparity: np.ndarray, flows: SequenceFlows, keep: float = 0.5) -> np.ndarray:
    """Each frame half carried over from the previous output along the flow: the true change along the flow
    (here the camera's approach) partly flattened, as a stabilization loss that ignores the motion would."""
    out = disparity.copy()
    for k in range(1, len(out)):
        carried = warp(torch.from_numpy(out[k - 1])[None, None], torch.from_numpy(np.asarray(flows.bwd[k - 1]))[None]
                       .double())[0, 0].numpy()
        out[k] = keep * disparity[k] + (1 - keep) * carried
    return out


def test_exact_depth_has_no_error_flicker_where_opw_is_at_its_floor(dolly):
    depth, _, flows = dolly
    disparity = 2.0 / depth + 0.3  # any scale and shift: the alignment takes them out
    error, value = _depth_error("depth", disparity, depth, flows)
    assert value > 0.02  # forward motion: the exact answer changes along the flow
    assert error < 1e-3 * value


def test_flattened_and_flickering_depth_both_raise_it(dolly):
    depth, _, flows = dolly
    exact, floor = _depth_error("depth", 1.0 / depth, depth, flows)
    flat_error, flat_opw = _depth_error("depth", _flattened(1.0 / depth, flows), depth, flows)
    assert flat_opw < 0.9 * floor  # OPW rewards the flattened motion
    assert flat_error > 0.1 * floor and flat_error > 100 * max(exact, 1e-6)  # the error's OPW does not
    gains = 1.0 + 0.05 * np.resize([1.0, -1.0], len(depth))[:, None, None]
    flicker_error, _ = _depth_error("depth", gains / depth, depth, flows)
    assert flicker_error > 20 * max(exact, 1e-6) and flicker_error > 0.01


def test_metric_depth_and_normals(dolly):
    depth, normal, flows = dolly
    gains = 1.0 + 0.05 * np.resize([1.0, -1.0], len(depth))[:, None, None]
    exact, _ = _depth_error("metric_depth", depth, depth, flows)
    flickering, _ = _depth_error("metric_depth", depth * gains, depth, flows)
    assert exact < 1e-4 and flickering > 0.02
    task = get_task("normal")
    assert error_opw(task, normal, normal, flows, {}, "synthetic")["opw_err"] < 1e-6
    turned = normal.copy()
    turned[1::2] = turned[1::2] @ np.array([[1.0, 0, 0], [0, np.cos(0.1), -np.sin(0.1)], [0, np.sin(0.1), np.cos(0.1)]])
    assert error_opw(task, turned, normal, flows, {}, "synthetic")["opw_err"] > 0.05


def test_pixels_without_ground_truth_are_left_out(dolly):
    """A sensor's holes (and the sky beyond the depth cap) are not compared: the exact answer still scores zero
    where the ground truth has holes, and a prediction that is wrong only inside them scores the same."""
    depth, _, flows = dolly
    holes = depth.copy()
    holes[:, 10:20, 20:40] = 0.0  # no depth there
    holes[:, :, :6] = 100.0  # beyond the synthetic depth cap
    exact, _ = _depth_error("depth", 1.0 / depth, holes, flows)
    assert exact < 1e-6
    wrong_inside = 1.0 / depth
    wrong_inside[1::2, 10:20, 20:40] *= 3.0
    assert _depth_error("depth", wrong_inside, holes, flows)[0] < 1e-6
    task = get_task("depth")
    nothing = np.zeros_like(depth)
    assert error_opw(task, 1.0 / depth, nothing, flows, {"scale": 1.0, "shift": 0.0}, "synthetic") == {}
