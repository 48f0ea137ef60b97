"""`bufferanytime export onnx`: the files run in ONNX Runtime and agree with PyTorch (max |diff| <= 1e-4 of the
output range) for depth and normals, at window lengths other than the one traced; bad input writes nothing."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bufferanytime.cli.main import main
from bufferanytime.models import load_model
from tests.helpers import files_under, run_main

onnxruntime = pytest.importorskip("onnxruntime", reason="the [onnx] extra is part of `make test`")
TOLERANCE = 1e-4  # of the output range


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The embedded models (depth and normals) exported once, traced with windows of 3 frames."""
    out = tmp_path_factory.mktemp("onnx") / "export"
    assert main(["export", "onnx", "tiny-synthetic", "-o", str(out), "--frames", "3", "-q"]) == 0
    return out


def _torch_and_onnx(out, kind, role, batch):
    info = json.loads((out / f"{kind}.onnx.json").read_text())
    entry = info["files"][role]
    h, w = info["size_rule"]["height"], info["size_rule"]["width"]
    x = torch.rand(*batch, 3, h, w, generator=torch.Generator().manual_seed(len(batch) * 10 + batch[-1]))
    model = load_model(kind, "tiny-synthetic", per_frame=role == "prior").eval()
    with torch.no_grad():
        expected = (model(x) if role == "video" else model(x[None])[0]).numpy()
    session = onnxruntime.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {entry["inputs"][0]["name"]: x.numpy()})[0]
    return expected, got, entry


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["depth", "normal"])
@pytest.mark.parametrize(("role", "batch"), [("video", (1, 3)), ("video", (1, 8)), ("prior", (5,)), ("prior", (1,))])
def test_onnx_runtime_matches_pytorch(exported, kind, role, batch):
    """The eager model (chunked decoding, cached positions) against the exported graph, also at T=8, N=5 and N=1
    when the export traced 3 frames: the window axis is dynamic."""
    expected, got, entry = _torch_and_onnx(exported, kind, role, batch)
    assert got.shape == expected.shape
    assert entry["outputs"][0]["shape"][len(batch) - 1] in ("T", "N")
    span = float(expected.max() - expected.min())
    assert span > 0.01  # a real output, not a constant
    assert np.abs(got - expected).max() <= TOLERANCE * span
    assert entry["check"]["relative"] <= TOLERANCE


def test_description_names_every_file_and_the_size_rule(exported):
    names = {p.name for p in files_under(exported)}
    for kind, key in (("depth", "disparity"), ("normal", "normal")):
        info = json.loads((exported / f"{kind}.onnx.json").read_text())
        assert info["size_rule"]["height"] % 2 == 0 and info["windows"]["window"] >= 2
        for entry in info["files"].values():
            assert {entry["file"], entry["weights"]} <= names
            assert entry["outputs"][0]["name"] == key
    assert not [n for n in names if n.startswith(".")]  # no staging left


def test_description_of_a_metric_model_states_the_scale_anchor_the_graph_leaves_out(exported, tmp_path):
    assert "scale_anchor" not in json.loads((exported / "depth.onnx.json").read_text())
    assert main(["export", "onnx", "tiny-synthetic-metric", "-o", str(tmp_path / "metric"), "--frames", "3", "-q"]) == 0
    info = json.loads((tmp_path / "metric" / "metric_depth.onnx.json").read_text())
    assert info["task"] == "metric_depth" and info["scale_anchor"]["stride"] == 2
    assert "exp(0.5 x the median" in info["windows"]["rule"]  # each task says how its windows are joined
    assert "least-squares scale and shift" in json.loads((exported / "depth.onnx.json").read_text())["windows"]["rule"]
    assert "renormalise" in json.loads((exported / "normal.onnx.json").read_text())["windows"]["rule"]
    assert "not in the video model's graph" in info["scale_anchor"]["rule"]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["no-such-model"], "unknown model"),
        (["tiny-synthetic", "--kind", "flow"], "unknown model kind"),
        (["tiny-synthetic", "--kind", "depth", "--size", "100x100"], "multiples of 14"),
        (["tiny-synthetic", "--frames", "1"], "at least 2"),
    ],
)
def test_bad_model_or_option_is_one_line_and_writes_nothing(tmp_path, capsys, argv, expect):
    out = tmp_path / "out"
    code, err = run_main(capsys, "export", "onnx", *argv, "-o", str(out))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not out.exists()


def test_unwritable_output_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """A read-only parent (simulated: the tests may run as root, who writes anywhere)."""
    import bufferanytime.io.outputs as outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    code, err = run_main(capsys, "export", "onnx", "tiny-synthetic", "-o", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and "not writable" in err[0], err
    assert files_under(tmp_path) == []


def test_a_failed_write_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    """The disk fills up while the second file is written: the first one, already complete, is not left either."""
    calls = []

    def export(graph, args, path, **kwargs):
        Path(path).write_bytes(b"partial")
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(torch.onnx, "export", export)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("kept")
    code, err = run_main(capsys, "export", "onnx", "tiny-synthetic", "--kind", "depth", "--no-check", "-o",
                         str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and err[0].endswith("no space left on device"), err
    assert len(calls) == 2
    assert files_under(tmp_path) == [tmp_path / "out" / "mine.txt"]


def test_output_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_main(capsys, "export", "onnx", "tiny-synthetic", "-o", str(tmp_path / "file" / "out"))
    assert code == 2 and len(err) == 1 and "is not a directory" in err[0], err
    assert (tmp_path / "file").read_text() == "x"
