"""``bufferanytime depth`` with a metric prior writes metres, under names that cannot be taken for disparity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.testing import make_tiny_metric_prior
from tests.helpers import files_under, run_main

MAX_DEPTH = 20


@pytest.fixture(scope="module")
def metric_prior(tmp_path_factory):
    return make_tiny_metric_prior(tmp_path_factory.mktemp("metric") / "prior", max_depth=MAX_DEPTH)


def test_metric_prior_on_a_real_clip_writes_metres(capsys, metric_prior, shared_dir, tiny_depth_prior, tmp_path):
    clip = shared_dir / "data" / "videos" / "davis_rollercoaster.mp4"
    if not clip.is_file():
        pytest.skip("the shared real clips are not on this machine")
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(clip), "--model", str(metric_prior), "--max-frames", "5", "--max-res",
                         "112", "--save", "npz,vis,png16", "-o", str(out), "-q")
    assert code == 0, err
    folder = out / "davis_rollercoaster"
    meta = json.loads((folder / "metric_depth.meta.json").read_text())
    assert meta["task"] == "metric_depth" and meta["units"] == "metres" and meta["kind"] == "depth"
    assert meta["outputs"]["vis"]["units"] == "metres" and meta["outputs"]["png16"]["scale"] == 256.0
    with np.load(folder / "metric_depth.npz") as npz:
        assert list(npz.keys()) == ["depth"]
        depth = npz["depth"]
    assert depth.shape[0] == 5 and depth.dtype == np.float32
    assert float(depth.min()) > 0 and float(depth.max()) <= MAX_DEPTH
    assert float(depth.max()) - float(depth.min()) > 0.1  # an informative prior: depth varies over the image
    import cv2

    png = cv2.imread(str(folder / "metric_depth_png16" / "000002.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and np.abs(png / 256.0 - depth[2]).max() <= 0.5 / 256 + 1e-6
    # a relative run into the same folder keeps the metric files: the two never share a name
    code, err = run_main(capsys, "depth", str(clip), "--model", str(tiny_depth_prior), "--max-frames", "5",
                         "--max-res", "112", "-o", str(out), "-q")
    assert code == 0, err
    names = sorted(p.name for p in folder.iterdir())
    assert {"depth.npz", "depth.meta.json", "metric_depth.npz", "metric_depth.meta.json"} <= set(names)
    with np.load(folder / "depth.npz") as npz:
        assert list(npz.keys()) == ["disparity"]


def test_metric_prior_without_max_depth_is_refused(capsys, metric_prior, small_video, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((metric_prior / "config.json").read_text())
    config["max_depth"] = None
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((metric_prior / "model.safetensors").read_bytes())
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(small_video), "--model", str(broken), "-o", str(out), "-q")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and "needs a positive max_depth" in err[0]
    assert files_under(out) == []
