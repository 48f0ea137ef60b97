"""``bufferanytime eval`` end to end on tiny data with tiny random priors: report files, numbers that match a
direct computation, and one-line errors for bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bufferanytime.cli.main import main
from bufferanytime.evaluation import depth_metrics, load_sequences
from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.models import load_model
from tests.evaluation.formats import make_kitti

MAX_RES = 56


def test_depth_report_on_synthetic(synthetic_root, tiny_depth_prior, tmp_path):
    out = tmp_path / "report"
    code = main(["eval", "depth", "--dataset", "synthetic", "--root", str(synthetic_root), "--model",
                 str(tiny_depth_prior), "--per-frame", "--flow", "gt", "--max-res", str(MAX_RES), "--device", "cpu",
                 "-o", str(out), "-q", "--note", "tiny random prior"])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left behind
    report = json.loads((out / "report.json").read_text())
    labels = ["tiny-depth (per-frame)", "tiny-depth"]
    assert [m["label"] for m in report["models"]] == labels
    assert list(report["sequences"]) == ["seq_000000", "seq_000001"]
    for label in labels:
        mean = report["mean"][label]
        assert {"abs_rel", "delta1", "rmse", "opw", "seconds_per_frame"} <= set(mean)
        assert 0 < mean["abs_rel"] and 0 <= mean["delta1"] <= 1 and mean["opw"] > 0
    # a video model fresh from its prior (zero temporal blocks) predicts what the prior predicts
    assert report["mean"][labels[0]]["abs_rel"] == pytest.approx(report["mean"][labels[1]]["abs_rel"], rel=1e-5)

    # the numbers are those of a direct computation
    seq = load_sequences("synthetic", synthetic_root)[1]
    model = load_model("depth", str(tiny_depth_prior))
    pred = np.stack(list(predict_frames(model, seq.frames(), InferenceSettings(max_res=MAX_RES, device="cpu"))))
    gt = np.stack([seq.read_depth(i) for i in range(seq.num_frames)])
    direct = depth_metrics(pred, gt, max_depth=report["max_depth"])
    for key, value in direct.items():
        assert report["sequences"]["seq_000001"]["models"]["tiny-depth"][key] == pytest.approx(value, rel=1e-5)

    md = (out / "report.md").read_text()
    assert "> tiny random prior" in md
    assert "| Model | AbsRel ↓ | δ1 ↑ | OPW ↓ | s/frame |" in md
    assert "| tiny-depth (per-frame) |" in md and "| tiny-depth |" in md
    image = cv2.imread(str(out / report["sequences"]["seq_000000"]["slice"]))
    assert image is not None and image.shape[0] > 32  # caption strip + 32 rows


def test_depth_report_on_kitti_layout_with_dis_flow(tiny_depth_prior, tmp_path):
    root = make_kitti(tmp_path / "kitti", frames=5, size=(31, 45))
    make_kitti(root, seq="2011_09_26_drive_0002_sync", frames=5, size=(31, 45))
    out = tmp_path / "report"
    code = main(["eval", "depth", "--dataset", "kitti", "--root", str(root), "--model", str(tiny_depth_prior),
                 "--max-frames", "3", "--sequences", "1", "--max-res", str(MAX_RES), "--device", "cpu",
                 "-o", str(out), "-q"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["flow"]["method"] == "dis" and report["max_depth"] == 80.0
    (entry,) = report["sequences"].values()
    assert entry["frames"] == 3 and entry["size"] == [30, 44]
    assert (out / entry["slice"]).is_file()


def test_normal_report_on_synthetic(synthetic_root, tiny_normal_prior, tmp_path):
    out = tmp_path / "report"
    code = main(["eval", "normal", "--dataset", "synthetic", "--root", str(synthetic_root), "--model",
                 str(tiny_normal_prior), "--sequences", "1", "--max-frames", "3", "--flow", "gt", "--max-res", "32",
                 "--device", "cpu", "-o", str(out), "-q"])
    assert code == 0
    mean = json.loads((out / "report.json").read_text())["mean"]["tiny-normal"]
    assert 0 <= mean["mean"] <= 180 and 0 <= mean["a11"] <= mean["a22"] <= mean["a30"] <= 100
    header = "| Model | Mean ↓ | Median ↓ | 11.25° ↑ | 22.5° ↑ | 30° ↑ | OPW ↓ | s/frame |"
    assert header in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["depth", "--dataset", "kitti", "--flow", "gt"], "only the synthetic dataset"),
        (["normal", "--dataset", "kitti"], "no normal ground truth"),
        (["depth", "--dataset", "sintel"], "not a Sintel folder"),
        (["depth", "--dataset", "kitti", "--flow-weights", "/nonexistent/raft.pth"], "no such flow weights"),
    ],
)
def test_bad_input_is_one_line_error(extra, message, tiny_depth_prior, tmp_path, capsys):
    root = make_kitti(tmp_path / "kitti", frames=2, size=(16, 16))
    out = tmp_path / "report"
    code = main(["eval", *extra, "--root", str(root), "--model", str(tiny_depth_prior), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()
