"""The metric depth task: its files, encodings, alignments and OPW."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.evaluation import opw
from bufferanytime.evaluation.consistency import SequenceFlows
from bufferanytime.tasks import DEPTH, METRIC_DEPTH, get_task, list_tasks


def test_names_never_mix_with_relative_depth():
    assert get_task("metric_depth") is METRIC_DEPTH and METRIC_DEPTH.kind == "depth"
    assert "metric_depth" not in list_tasks() and "metric_depth" in list_tasks(every=True)
    metric, relative = METRIC_DEPTH.files, DEPTH.files
    assert (metric.npz, metric.key, metric.meta) == ("metric_depth.npz", "depth", "metric_depth.meta.json")
    assert not {metric.npz, metric.vis, metric.png16, metric.exr, metric.meta} & {
        relative.npz, relative.vis, relative.png16, relative.exr, relative.meta}
    assert METRIC_DEPTH.units == "metres"


def _gt(frames: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(1.0, 12.0, (frames, 12, 16))  # twice these stays below the synthetic cap (30 m)


def test_alignment_none_scale_affine():
    gt = _gt()
    pred = (2.0 * gt).astype(np.float32)  # metric, but twice too far
    none = METRIC_DEPTH.score(pred, gt, "synthetic")
    assert none["abs_rel"] == pytest.approx(1.0, abs=1e-6) and none["delta1"] == 0.0
    assert none["median_depth"] == pytest.approx(np.median(2 * gt[:, ::2, ::2]), rel=1e-5)
    scale = METRIC_DEPTH.score(pred, gt, "synthetic", align="scale")
    assert scale["abs_rel"] < 1e-5 and scale["delta1"] == 1.0
    affine = METRIC_DEPTH.score(pred, gt, "synthetic", align="affine")
    assert affine["abs_rel"] < 1e-5
    with pytest.raises(InputError, match="choose from none, scale, affine"):
        METRIC_DEPTH.score(pred, gt, "synthetic", align="median")


def test_png16_is_millimetre_exact_and_documented(tmp_path):
    depth = np.array([[[0.5, 3.25], [12.0, 300.0]]], dtype=np.float32)
    info = METRIC_DEPTH.write_png16(depth, tmp_path / "png")
    png = cv2.imread(str(tmp_path / "png" / "000000.png"), cv2.IMREAD_UNCHANGED)
    decoded = png / info["scale"]
    assert info["units"] == "metres" and "png / scale" in info["decode"]
    assert np.allclose(decoded[0], [0.5, 3.25]) and decoded[1, 0] == 12.0
    assert decoded[1, 1] == pytest.approx(65535 / 256)  # beyond the range: the largest value, not a wrap-around


def test_opw_on_log_depth_ignores_a_global_scale_and_counts_relative_flicker():
    gt = np.repeat(_gt(1), 4, axis=0).astype(np.float32)  # a still scene
    flicker = gt * np.array([1.0, 1.1, 1.0, 1.1], dtype=np.float32)[:, None, None]
    zero = np.zeros((3, 2, 12, 16), np.float32)
    flows = SequenceFlows.from_flows(zero, zero, np.ones((3, 12, 16), bool), np.ones((3, 12, 16), bool), tau=1.0,
                                     method="test")
    base = opw(flicker, flows=flows, task=METRIC_DEPTH)
    assert base == pytest.approx(np.log(1.1), rel=1e-4)  # 10 % flicker, wherever the pixel is
    assert opw(7.0 * flicker, flows=flows, task=METRIC_DEPTH) == pytest.approx(base, rel=1e-4)
    assert opw(gt, flows=flows, task=METRIC_DEPTH) == pytest.approx(0.0, abs=1e-6)


def test_visualisation_is_near_bright_with_the_range_in_metres():
    frame = np.array([[1.0, 10.0]], dtype=np.float32)
    rgb = METRIC_DEPTH.to_rgb(frame, (1.0, 10.0))
    assert rgb[0, 0].sum() > rgb[0, 1].sum()
    assert METRIC_DEPTH.vis_info((1.0, 10.0))["units"] == "metres"
