import argparse

import av
import numpy as np
import pytest
from PIL import Image

from bufferanytime.cli import flow as flow_cli
from bufferanytime.errors import InputError


def _run(argv):
    parser = argparse.ArgumentParser()
    flow_cli.register(parser.add_subparsers())
    args = parser.parse_args(["flow", *argv])
    return args.func(args)


def _frames(folder, shifted_pair, n=3, dx=2.0, dy=1.0):
    folder.mkdir()
    for t in range(n):
        _, frame = shifted_pair(48, 64, t * dx, t * dy, seed=3)
        Image.fromarray((frame * 255 + 0.5).astype(np.uint8)).save(folder / f"frame_{t:02d}.png")
    return folder


def test_flow_cli_writes_npz_and_video(tmp_path, shifted_pair):
    frames = _frames(tmp_path / "clip", shifted_pair)
    assert _run([str(frames), "-o", str(tmp_path / "out"), "--method", "dis"]) == 0
    out = tmp_path / "out" / "clip"
    with np.load(out / "flow.npz") as data:
        fwd, bwd = data["fwd"], data["bwd"]
    assert fwd.shape == bwd.shape == (2, 48, 64, 2) and fwd.dtype == np.float32
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(fwd[inner] - [2.0, 1.0]).mean() < 0.5
    assert np.abs(bwd[inner] + [2.0, 1.0]).mean() < 0.5
    with av.open(str(out / "flow.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2
    assert sorted(p.name for p in out.iterdir()) == ["flow.mp4", "flow.npz"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip"]  # no temporary leftovers


def test_flow_cli_bad_input(tmp_path, shifted_pair):
    frames = _frames(tmp_path / "clip", shifted_pair, n=2)
    with pytest.raises(InputError, match="weights"):
        _run([str(frames), "-o", str(tmp_path / "out"), "--method", "raft-small"])
    with pytest.raises(InputError, match="two frames"):
        _run([str(frames / "frame_00.png"), "-o", str(tmp_path / "out"), "--method", "dis"])
    with pytest.raises(InputError, match="needs at least (2|two frames)"):  # found by the reader or by flow
        _run([str(frames), "-o", str(tmp_path / "out"), "--method", "dis", "--max-frames", "1"])
    assert not (tmp_path / "out" / "clip").exists()


def test_flow_keeps_other_files_of_the_output_folder(tmp_path, shifted_pair):
    """``flow`` next to depth outputs (or the user's files) in ``OUT/<stem>/`` replaces only its own two files."""
    frames = _frames(tmp_path / "clip", shifted_pair)
    out = tmp_path / "out" / "clip"
    out.mkdir(parents=True)
    (out / "depth.npz").write_bytes(b"depth of an earlier run")
    (out / "flow.npz").write_bytes(b"stale flow")
    assert _run([str(frames), "-o", str(tmp_path / "out"), "--method", "dis"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["depth.npz", "flow.mp4", "flow.npz"]
    assert (out / "depth.npz").read_bytes() == b"depth of an earlier run"
    with np.load(out / "flow.npz") as data:
        assert data["fwd"].shape == (2, 48, 64, 2)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["clip"]


def test_flow_output_inside_the_input_folder_is_refused(tmp_path, shifted_pair):
    frames = _frames(tmp_path / "clip", shifted_pair, n=2)
    before = sorted(p.name for p in frames.iterdir())
    with pytest.raises(InputError, match="into the input folder itself"):
        _run([str(frames), "-o", str(frames / ".."), "--method", "dis"])
    with pytest.raises(InputError, match="into the input folder itself"):
        _run([str(frames), "-o", str(frames), "--method", "dis"])
    assert sorted(p.name for p in frames.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]
