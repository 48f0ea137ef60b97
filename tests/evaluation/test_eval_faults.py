"""``bufferanytime eval`` on datasets with broken sequences: one ``error:`` line per bad sequence, the others still
scored, exit 1 when some were skipped and 2 when none could be evaluated (and then nothing is written); a model
whose output is not finite: one ``warning:`` line per result, its row marked, exit 1; the report folder is written
into, never replaced, when it exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli.main import main
from bufferanytime.evaluation import write_dpt
from tests.evaluation.formats import make_bonn, make_kitti, make_scannet, make_sintel, make_synthetic, shorten_depth
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


# -- the fault matrix: one damaged file or folder per case, one line naming it, the other sequences scored ----------
def _npy(name: str, change):
    """A fault: ``change`` applied to ``seq_000001/<name>.npy`` (the second sequence; the first is scored)."""
    def fault(root):
        file = root / "seq_000001" / f"{name}.npy"
        np.save(file, change(np.load(file)))
        return "seq_000001"
    return fault


def _empty_npy(root):
    (root / "seq_000001" / "depth.npy").write_bytes(b"")
    return "seq_000001"


def _broken_meta(root):
    (root / "seq_000000" / "meta.json").write_text("{")  # the first sequence: the others must still be listed
    return "seq_000000"


def _meta_without_camera(root):
    meta = root / "seq_000001" / "meta.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "intrinsics"}))
    return "seq_000001"


SYNTHETIC_FAULTS = [
    # (id, fault, what the one line says)
    ("depth-of-another-size", _npy("depth", lambda a: a[:, :8, :12]),
     "depth.npy: frames of 12x8 px, the RGB frames are 24x16 px"),
    ("flow-of-another-size", _npy("flow_fwd", lambda a: a[:, :8, :12]),
     "flow_fwd.npy: frames of 12x8 px, the RGB frames are 24x16 px"),
    ("flow-mask-of-another-size", _npy("flow_valid_bwd", lambda a: a[:, :8]),
     "flow_valid_bwd.npy: frames of 24x8 px, the RGB frames are 24x16 px"),
    ("no-valid-depth-pixel", _npy("depth", np.zeros_like),
     "no valid ground-truth pixel in any of its 3 frames (valid: depth in (0.001, 30) m)"),
    ("nan-depth", _npy("depth", lambda a: np.full_like(a, np.nan)), "no valid ground-truth pixel"),
    ("depth-of-text", _npy("depth", lambda a: a.astype("U3")), "depth.npy: dtype <U3, expected numbers"),
    ("empty-depth-file", _empty_npy, "depth.npy: not a readable .npy array (EOFError)"),
    ("nan-flow", _npy("flow_bwd", lambda a: np.full_like(a, np.nan)),
     "ground-truth backward flow has 1536 non-finite value(s) (NaN or inf)"),
    ("broken-meta-first", _broken_meta, "meta.json: unreadable (JSONDecodeError)"),
    ("meta-without-camera", _meta_without_camera, "meta.json: JSON without a usable 'intrinsics' object"),
]


@pytest.mark.parametrize(("fault", "message"), [c[1:] for c in SYNTHETIC_FAULTS], ids=[c[0] for c in SYNTHETIC_FAULTS])
def test_synthetic_fault_matrix(fault, message, tiny_depth_prior, tmp_path, capsys):
    root = make_synthetic(tmp_path / "data", seeds=(0, 1))
    bad = fault(root)
    good = ({"seq_000000", "seq_000001"} - {bad}).pop()
    _assert_only_bad_skipped(capsys, root, tmp_path, tiny_depth_prior, "synthetic", bad, good, message,
                             "--flow", "gt")


def _assert_only_bad_skipped(capsys, root, tmp_path, model, dataset, bad, good, message, *extra):
    out = tmp_path / "report"
    code, err, stdout = _eval(capsys, root, out, model, dataset, *extra)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: sequence {bad} skipped: ") and message in err[0], err[0]
    assert "--intrinsics" not in err[0] and "Traceback" not in err[0]
    assert "(1 sequence(s) skipped)" in stdout
    report = json.loads((out / "report.json").read_text())
    assert list(report["sequences"]) == [good] and list(report["skipped"]) == [bad]
    assert message in report["skipped"][bad]
    assert report["mean"][model.name]["sequences"] == 1 and report["mean"][model.name]["abs_rel"] > 0
    md = (out / "report.md").read_text()
    assert f"- **{bad}**: " in md and "1 skipped" in md
    assert sorted(p.name for p in (out / "slices").iterdir()) == [f"{good}.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, "report"])  # nothing else written


def _kitti_small_depth(root):
    gt = root / "data_depth_annotated/val/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"
    for file in gt.iterdir():
        Image.fromarray(np.full((10, 16), 2000, np.uint16)).save(file)


def _sintel_dpt(change):
    def fault(root):
        for file in (root / "training/depth/alley_1").iterdir():
            file.write_bytes(change(file.read_bytes()))
    return fault


def _sintel_small_depth(root):
    for file in (root / "training/depth/alley_1").iterdir():
        write_dpt(file, np.ones((5, 6)))


def _scannet_depth_smaller_than_the_crop(root):
    for file in (root / "scans_test/scene0707_00/depth").iterdir():
        Image.fromarray(np.full((15, 20), 2000, np.uint16)).save(file)


def _layouts(tmp_path):
    kitti = make_kitti(tmp_path / "kitti", frames=3, size=(20, 30))
    make_kitti(kitti, seq="2011_09_26_drive_0002_sync", frames=3, size=(20, 30))
    return {"kitti": kitti, "sintel": make_sintel(tmp_path / "sintel", scenes=("alley_1", "alley_2"), frames=3),
            "scannet": make_scannet(tmp_path / "scannet", scenes=("scene0707_00", "scene0708_00"), frames=6,
                                    size=(30, 40))}


LAYOUT_FAULTS = [
    ("kitti-depth-of-another-size", "kitti", _kitti_small_depth, "2011_09_26_drive_0001_sync",
     "2011_09_26_drive_0002_sync", "ground-truth depth is 16x10 px but the RGB frames are 30x20 px"),
    ("sintel-depth-of-another-size", "sintel", _sintel_small_depth, "alley_1", "alley_2",
     "ground-truth depth is 6x5 px but the RGB frames are 12x10 px"),
    ("sintel-dpt-longer-than-its-header", "sintel", _sintel_dpt(lambda b: b + b"\0" * 8), "alley_1", "alley_2",
     "frame_0001.dpt: data beyond the 12x10 values its header gives"),
    ("sintel-dpt-truncated", "sintel", _sintel_dpt(lambda b: b[:20]), "alley_1", "alley_2",
     "frame_0001.dpt: truncated .dpt file (2 of 120 values)"),
    ("scannet-depth-smaller-than-the-crop", "scannet", _scannet_depth_smaller_than_the_crop, "scene0707_00",
     "scene0708_00", "depth/0.png: 20x15 px is too small for this dataset's crop"),
]


@pytest.mark.parametrize(("dataset", "fault", "bad", "good", "message"), [c[1:] for c in LAYOUT_FAULTS],
                         ids=[c[0] for c in LAYOUT_FAULTS])
def test_benchmark_layout_fault_matrix(dataset, fault, bad, good, message, tiny_depth_prior, tmp_path, capsys):
    root = _layouts(tmp_path)[dataset]
    for other in {"kitti", "sintel", "scannet"} - {dataset}:
        shutil.rmtree(tmp_path / other)
    fault(root)
    _assert_only_bad_skipped(capsys, root, tmp_path, tiny_depth_prior, dataset, bad, good, message)


# -- a model whose output overflows: one warning per result, the row marked, exit 1 ---------------------------------
OVERFLOW_WEIGHTS = {"depth": ("model.safetensors", ("head.conv1.weight", "head.conv2.weight", "head.conv3.weight")),
                    "normal": ("vae/diffusion_pytorch_model.safetensors",
                               ("decoder.conv_in.weight", "decoder.conv_out.weight"))}


def _overflowing(prior, folder):
    """A copy of the tiny prior whose finite weights (x 1e30) make its output overflow to inf or NaN."""
    from safetensors.torch import load_file, save_file

    kind = "depth" if (prior / "model.safetensors").is_file() else "normal"
    copy = Path(shutil.copytree(prior, folder))
    file, keys = OVERFLOW_WEIGHTS[kind]
    weights = load_file(copy / file)
    for key in keys:
        weights[key] = weights[key] * 1e30
    save_file(weights, copy / file, metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_non_finite_output_is_one_warning_a_marked_row_and_exit_1(kind, tiny_depth_prior, tiny_normal_prior,
                                                                   tmp_path, capsys):
    prior = tiny_depth_prior if kind == "depth" else tiny_normal_prior
    overflow = _overflowing(prior, tmp_path / "overflow")
    root = make_synthetic(tmp_path / "data", seeds=(0, 1))
    out = tmp_path / "report"
    code = main(["eval", kind, "--dataset", "synthetic", "--root", str(root), "--model", str(prior), "--model",
                 str(overflow), "--max-res", str(MAX_RES), "--device", "cpu", "--flow", "gt", "-o", str(out), "-q"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith(("warning:", "error:", "Traceback"))]
    assert code == 1
    assert len(err) == 2 and all(line.startswith(f"warning: sequence seq_00000{i}: overflow gave ")
                                 and "non-finite value(s) (NaN or inf) in 3 of 3 frames" in line
                                 for i, line in enumerate(err)), err
    assert "(2 result(s) with non-finite output)" in captured.out
    assert "  overflow: no sequence scored (non-finite output)" in captured.out.splitlines()
    report = json.loads((out / "report.json").read_text())
    assert list(report["sequences"]) == ["seq_000000", "seq_000001"] and report["skipped"] == {}
    assert [(r["sequence"], r["model"]) for r in report["non_finite"]] == [("seq_000000", "overflow"),
                                                                           ("seq_000001", "overflow")]
    row = report["sequences"]["seq_000000"]["models"]["overflow"]
    assert row["error"] == "non-finite output" and row["opw"] is None and row["non_finite_values"] > 0
    assert report["mean"]["overflow"]["sequences"] == 0 and report["mean"]["overflow"]["opw"] is None
    assert report["mean"][prior.name]["sequences"] == 2 and report["mean"][prior.name]["opw"] > 0  # still scored
    md = (out / "report.md").read_text()
    assert "| seq_000001 / overflow (**non-finite output**) | – |" in md
    assert "- non-finite output, not scored and left out of the means: overflow on seq_000000" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "overflow", "report"]


# -- the report folder: never replaced as a whole when it exists -----------------------------------------------------
def test_report_into_the_current_empty_folder_keeps_the_folder(tiny_depth_prior, tmp_path, capsys, monkeypatch):
    root = make_synthetic(tmp_path / "data", seeds=(0,))
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    code, err, _ = _eval(capsys, root, ".", tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 0 and err == []
    assert here.is_dir() and here.stat().st_ino == inode  # the same folder, written into
    assert sorted(p.name for p in here.iterdir()) == ["report.json", "report.md", "slices"]
    # again, over the earlier report: still the same folder, the report files replaced
    (here / "report.md").write_text("old")
    code, err, _ = _eval(capsys, root, ".", tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 0 and here.stat().st_ino == inode
    assert (here / "report.md").read_text().startswith("# Video depth evaluation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "here"]  # no staging folder left beside it


def test_current_folder_with_the_users_files_is_refused_and_untouched(tiny_depth_prior, tmp_path, capsys,
                                                                      monkeypatch):
    root = make_synthetic(tmp_path / "data", seeds=(0,))
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    code, err, _ = _eval(capsys, root, ".", tiny_depth_prior, "synthetic", "--flow", "gt")
    assert code == 2 and err == [f"error: {here}: holds files that are not an eval report (notes.txt); choose a "
                                 "new or empty folder, or an earlier report's"]
    assert [p.name for p in here.iterdir()] == ["notes.txt"] and (here / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "here"]
