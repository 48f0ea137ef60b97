"""Figures with error bars: paired differences between two reports with a bootstrap interval over videos, the
ground truth's own OPW beside every OPW, AbsRel on moving objects apart from the static scene, and the evaluation
resolution stated in the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.evaluation import load_sequences
from bufferanytime.evaluation.compare import bootstrap_ci, load_report, paired_differences
from bufferanytime.evaluation.consistency import SequenceFlows, opw
from bufferanytime.tasks import get_task
from tests.helpers import run_main


def _report(values: dict[str, float], label: str = "m", dataset: str = "synthetic", **extra) -> dict:
    """A minimal report: one model, one AbsRel per sequence."""
    return {"task": "depth", "dataset": dataset, "models": [{"label": label}],
            "sequences": {name: {"models": {label: {"abs_rel": v, "seconds": 1.0}}} for name, v in values.items()},
            **extra}


def test_bootstrap_interval_is_fixed_and_tells_a_shift_from_noise():
    rng = np.random.default_rng(5)
    shifted = 0.01 + 0.002 * rng.standard_normal(12)
    low, high = bootstrap_ci(shifted)
    assert 0 < low < shifted.mean() < high and bootstrap_ci(shifted) == (low, high)  # same seed, same interval
    noise = 0.01 * rng.standard_normal(12)
    noise -= noise.mean()
    low, high = bootstrap_ci(noise)
    assert low < 0 < high


def test_pairs_only_the_videos_both_scored():
    ours = _report({"a": 0.10, "b": 0.20, "c": 0.30}, align="affine")
    theirs = _report({"b": 0.25, "c": 0.32, "d": 0.9}, label="n", align="scale")
    comparison = paired_differences(ours, theirs)
    (pair,) = comparison["pairs"]
    assert (pair["model"], pair["other_model"], pair["sequences"]) == ("m", "n", 2)
    d = pair["metrics"]["abs_rel"]
    assert d["per_sequence"] == pytest.approx({"b": -0.05, "c": -0.02})
    assert d["mean_diff"] == pytest.approx(-0.035) and d["ci95"][0] <= -0.035 <= d["ci95"][1]
    assert "seconds" not in pair["metrics"]
    assert comparison["protocol_differences"] == ["align"]
    single = paired_differences(ours, _report({"a": 0.1}))
    assert single["pairs"][0]["metrics"]["abs_rel"]["ci95"] is None  # one video: no interval


def test_a_metric_some_videos_lack_is_compared_on_the_others():
    """A metric some videos lack (AbsRel on moving objects where nothing moves) is paired on the others."""
    ours, theirs = _report({"a": 0.1, "b": 0.2, "c": 0.3}), _report({"a": 0.1, "b": 0.2, "c": 0.3}, label="n")
    for report, values in ((ours, {"a": 0.05, "c": 0.07}), (theirs, {"a": 0.04, "b": 0.5, "c": 0.05})):
        for name, value in values.items():
            report["sequences"][name]["models"][report["models"][0]["label"]]["abs_rel_moving"] = value
    (pair,) = paired_differences(ours, theirs)["pairs"]
    assert pair["sequences"] == 3 and pair["metrics"]["abs_rel"]["sequences"] == 3
    d = pair["metrics"]["abs_rel_moving"]
    assert d["sequences"] == 2 and d["per_sequence"] == pytest.approx({"a": 0.01, "c": 0.02})


@pytest.mark.parametrize("content, message", [(None, "no such report"), ("{", "not a readable report"),
                                              ('{"task": "depth"}', "not an evaluation report")])
def test_unreadable_reports_are_one_line(tmp_path, content, message):
    path = tmp_path / "other"
    if content is not None:
        path.mkdir()
        (path / "report.json").write_text(content)
    with pytest.raises(InputError, match=message):
        load_report(path)


@pytest.fixture(scope="module")
def first_report(synthetic_root, tiny_depth_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "report"
    code = _eval(synthetic_root, tiny_depth_prior, out)
    assert code == 0
    return out


def _eval(root, model, out, *extra) -> int:
    from bufferanytime.cli.main import main

    return main(["eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model", str(model), "--flow",
                 "gt", "--max-res", "56", "--device", "cpu", "-o", str(out), "-q", *extra])


def test_floor_moving_split_and_resolution_in_the_report(first_report, synthetic_root):
    report = json.loads((first_report / "report.json").read_text())
    task = get_task("depth")
    for name, entry in report["sequences"].items():
        metrics = entry["models"]["tiny-depth"]
        # the ground truth's own OPW with the same (ground-truth) flows, on its disparity
        seq = next(s for s in load_sequences("synthetic", synthetic_root) if s.name == name)
        gt = np.stack([seq.read_depth(i) for i in range(seq.num_frames)])
        flows = SequenceFlows.from_flows(*seq.gt_flows(), tau=report["flow"]["tau"], method="ground truth")
        assert metrics["opw_gt"] == pytest.approx(opw(1.0 / gt, flows=flows, task=task), rel=1e-5)
        assert metrics["opw_gt"] > 0  # a moving camera: the exact answer is not constant along the flow
        assert metrics["opw_err"] > 0  # a random prior is not the exact answer
        moving = np.load(synthetic_root / name / "moving.npy")
        assert metrics["moving_fraction"] == pytest.approx(moving.mean())
        assert metrics["abs_rel_static"] > 0
        assert (metrics["abs_rel_moving"] is None) == (not moving.any())
    assert report["resolution"]["sizes"] == ["48x32"]
    assert "48x32" in report["resolution"]["metrics"]
    md = (first_report / "report.md").read_text()
    assert "## OPW and its floor" in md and "## Moving objects" in md and "- evaluation resolution:" in md
    assert "OPW of the error" in md


def test_compare_with_an_earlier_report(first_report, synthetic_root, tiny_depth_prior, tmp_path, capsys):
    out = tmp_path / "second"
    code = _eval(synthetic_root, tiny_depth_prior, out, "--compare", str(first_report))
    assert code == 0
    printed = capsys.readouterr().out
    assert "tiny-depth - tiny-depth (2 paired videos): abs_rel +0.0000 [+0.0000, +0.0000]" in printed
    comparison = json.loads((out / "report.json").read_text())["compare"]
    assert comparison["other"] == str(first_report / "report.json") and comparison["protocol_differences"] == []
    abs_rel = comparison["pairs"][0]["metrics"]["abs_rel"]
    assert abs_rel["mean_diff"] == pytest.approx(0.0, abs=1e-9)  # the same model on the same videos
    assert "## Paired comparison" in (out / "report.md").read_text()


@pytest.mark.parametrize("case", ["missing", "other dataset"])
def test_a_bad_compare_report_is_one_line_and_writes_nothing(first_report, synthetic_root, tiny_depth_prior,
                                                             tmp_path, capsys, case):
    other = tmp_path / "other.json"
    if case == "other dataset":
        report = json.loads((first_report / "report.json").read_text())
        other.write_text(json.dumps(report | {"dataset": "kitti"}))
    out = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(synthetic_root), "--model",
                         str(tiny_depth_prior), "--flow", "gt", "--device", "cpu", "-o", str(out), "-q",
                         "--compare", str(other))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {other}: "), err
    assert ("no such report" if case == "missing" else "same task and dataset") in err[0]
    assert not out.exists()


@pytest.mark.parametrize("damage", ["shape", "truncated"])
def test_a_damaged_moving_mask_skips_its_video_in_one_line(tmp_path, tiny_depth_prior, capsys, damage):
    from bufferanytime.synthetic import render_video, write_video_dir

    root = tmp_path / "data"
    for seed in (0, 1):
        write_video_dir(render_video(seed, 3, (24, 32)), root / f"seq_{seed:06d}")
    bad = root / "seq_000001" / "moving.npy"
    if damage == "shape":
        np.save(bad, np.zeros((3, 24, 16), bool))
    else:
        bad.write_bytes(bad.read_bytes()[:20])
    out = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model",
                         str(tiny_depth_prior), "--flow", "gt", "--device", "cpu", "-o", str(out), "-q")
    assert code == 1 and len(err) == 1 and err[0].startswith("error: sequence seq_000001 skipped: "), err
    report = json.loads((out / "report.json").read_text())
    assert list(report["sequences"]) == ["seq_000000"] and list(report["skipped"]) == ["seq_000001"]


def test_a_video_where_nothing_moves_has_no_moving_figure(tmp_path, tiny_depth_prior, capsys):
    from bufferanytime.synthetic import render_video, write_video_dir

    root = tmp_path / "data"
    write_video_dir(render_video(0, 3, (24, 32), objects="static"), root / "seq_000000")
    out = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model",
                         str(tiny_depth_prior), "--flow", "gt", "--device", "cpu", "-o", str(out), "-q")
    assert code == 0 and err == []
    metrics = json.loads((out / "report.json").read_text())["sequences"]["seq_000000"]["models"]["tiny-depth"]
    assert metrics["abs_rel_moving"] is None and metrics["abs_rel_static"] > 0 and metrics["moving_fraction"] == 0
