"""``bufferanytime eval`` on datasets with broken sequences: one ``error:`` line per bad sequence, the others still
scored, exit 1 when some were skipped and 2 when none could be evaluated (and then nothing is written)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.main import main
from tests.evaluation.formats import make_bonn, make_kitti, make_synthetic, shorten_depth
from tests.helpers import run_main

MAX_RES = 32


def _eval(capsys, root, out, model, dataset="synthetic", *extra):
    code = main(["eval", "depth", "--dataset", dataset, "--root", str(root), "--model", str(model), "--max-res",
                 str(MAX_RES), "--device", "cpu", "-o", str(out), "-q", *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def test_bad_sequences_are_skipped_and_the_others_scored(tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data")
    shorten_depth(root, "seq_000000")  # fewer ground-truth frames than RGB frames, listed first
    (root / "seq_000002" / "rgb" / "000001.png").unlink()  # a missing RGB frame
    out = tmp_path / "report"
    code, err, stdout = _eval(capsys, root, out, tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 1
    assert len(err) == 2 and all(line.startswith("error: sequence seq_00000") for line in err)
    assert "seq_000000 skipped: " in err[0] and "depth.npy: shape (2, 16, 24), expected 3 frames" in err[0]
    assert "seq_000002 skipped: " in err[1] and "2 frames but meta.json says 3" in err[1]
    assert "(2 sequence(s) skipped)" in stdout
    report = json.loads((out / "report.json").read_text())
    assert list(report["sequences"]) == ["seq_000001"]
    assert sorted(report["skipped"]) == ["seq_000000", "seq_000002"]
    assert report["mean"]["tiny-depth"]["sequences"] == 1 and report["mean"]["tiny-depth"]["abs_rel"] > 0
    assert sorted(p.name for p in (out / "slices").iterdir()) == ["seq_000001.png"]
    md = (out / "report.md").read_text()
    assert "## Skipped sequences" in md and "- **seq_000002**: " in md and "2 skipped" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "report"]  # no temporary folder left


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x89PNG truncated", "000002.png: not a readable image"),
     (cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes(), "RGB frame 2 is 30x20 px, frame 0 is 24x16")],
)
def test_bad_frame_found_while_evaluating_skips_only_its_sequence(content, message, tiny_depth_prior, tmp_path,
                                                                  capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0, 1))
    (root / "seq_000000" / "rgb" / "000002.png").write_bytes(content)
    out = tmp_path / "report"
    code, err, _ = _eval(capsys, root, out, tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: sequence seq_000000 skipped: ") and message in err[0]
    assert list(json.loads((out / "report.json").read_text())["sequences"]) == ["seq_000001"]


def test_every_sequence_bad_writes_nothing_and_exits_2(tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0, 1))
    for name in ("seq_000000", "seq_000001"):
        shorten_depth(root, name)
    out = tmp_path / "report"
    code, err, stdout = _eval(capsys, root, out, tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 2 and len(err) == 2 and all(line.startswith("error: sequence seq_") for line in err)
    assert stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_kitti_missing_raw_frame_in_the_first_of_two_sequences(tiny_depth_prior, tmp_path, capsys):
    root = make_kitti(tmp_path / "kitti", frames=3, size=(20, 30))
    make_kitti(root, seq="2011_09_26_drive_0002_sync", frames=3, size=(20, 30))
    missing = root / "raw_data/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000006.png"
    missing.unlink()
    out = tmp_path / "report"
    code, err, _ = _eval(capsys, root, out, tiny_depth_prior, "kitti")
    assert code == 1
    assert err == [f"error: sequence 2011_09_26_drive_0001_sync skipped: {missing}: missing file "
                   "(1 missing in this sequence)"]
    report = json.loads((out / "report.json").read_text())
    assert list(report["sequences"]) == ["2011_09_26_drive_0002_sync"]


@pytest.mark.parametrize("device", ["cuda", "mps", "cuda:3"])
def test_missing_device_is_one_line(device, tiny_depth_prior, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    root = make_synthetic(tmp_path / "data", seeds=(0,))
    out = tmp_path / "report"
    code, err = run_main(capsys, "eval", "depth", "--dataset", "synthetic", "--root", str(root), "--model",
                         str(tiny_depth_prior), "--device", device, "-o", str(out), "-q")
    kind = "CUDA" if device.startswith("cuda") else "MPS"
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --device {device}: no ") and kind in err[0]
    assert not out.exists()


def test_report_folder_with_user_files_is_refused_and_kept(tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0,))
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err, _ = _eval(capsys, root, out, tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {out.resolve()}: holds files that are not an eval report (notes.txt)")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    # an earlier report is replaced
    report = tmp_path / "report"
    assert _eval(capsys, root, report, tiny_depth_prior, "synthetic", "--flow", "gt")[0] == 0
    (report / "report.md").write_text("old")
    assert _eval(capsys, root, report, tiny_depth_prior, "synthetic", "--flow", "gt")[0] == 0
    assert (report / "report.md").read_text().startswith("# Video depth evaluation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "report", "results"]


@pytest.mark.parametrize(("extra", "message"), [(["--column", "nan"], "argument --column: must be a finite number"),
                                                (["-o", "FILE/report"], "is not a directory")])
def test_bad_column_or_output_under_a_file(extra, message, tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0,))
    blocker = tmp_path / "FILE"
    blocker.write_text("mine")
    extra = [str(blocker / "report") if e == "FILE/report" else e for e in extra]
    try:
        code, err, _ = _eval(capsys, root, tmp_path / "report", tiny_depth_prior, "synthetic", *extra)
    except SystemExit as exc:
        code, err = exc.code, capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "data"] and blocker.read_text() == "mine"


@pytest.mark.parametrize(
    ("depth", "message"),
    [(np.full((9, 13), 200, np.uint8), "expected a single-channel 16-bit depth PNG"),
     (np.full((7, 11), 4000, np.uint16), "depth frame 2: frame shape (6, 10) differs from (8, 12)")],
)
def test_bonn_depth_of_the_wrong_kind_or_size_skips_its_sequence(depth, message, tiny_depth_prior, tmp_path, capsys):
    root = make_bonn(tmp_path / "bonn", seqs=("mine_a", "mine_b"), frames=36, size=(9, 13))
    Image.fromarray(depth).save(sorted((root / "mine_a" / "depth").iterdir())[32])
    out = tmp_path / "report"
    code, err, _ = _eval(capsys, root, out, tiny_depth_prior, "bonn")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: sequence mine_a skipped: ") and message in err[0]
    assert list(json.loads((out / "report.json").read_text())["sequences"]) == ["mine_b"]
