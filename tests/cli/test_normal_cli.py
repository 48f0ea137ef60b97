"""`bufferanytime normal` end to end: the shared I/O and CLI conventions of `depth`, on the normal model."""

from __future__ import annotations

import numpy as np

from bufferanytime.cli.main import main


def test_normal_on_sintel_frames_and_per_frame_baseline(shared_dir, tiny_normal_prior, tmp_path, capsys):
    frames = shared_dir / "data/frames/sintel_market"
    common = ["normal", str(frames), "--model", str(tiny_normal_prior), "--max-frames", "6", "--max-res", "128", "-q"]
    assert main([*common, "-o", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    with np.load(tmp_path / "out/sintel_market/normal.npz") as npz:
        normal = npz["normal"]
    assert normal.shape == (6, 436, 1024, 3) and normal.dtype == np.float32
    assert np.isfinite(normal).all()
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-4)
    assert (tmp_path / "out/sintel_market/normal_vis.mp4").is_file()

    assert main([*common, "--per-frame", "-o", str(tmp_path / "pf")]) == 0
    with np.load(tmp_path / "pf/sintel_market/normal.npz") as npz:
        np.testing.assert_allclose(npz["normal"], normal, atol=1e-5)


def test_normal_bad_input_and_decode_chunk(tiny_normal_prior, small_video, tmp_path, capsys):
    code = main(["normal", str(tmp_path / "missing.mp4"), "--model", str(tiny_normal_prior), "-o",
                 str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "out").iterdir())
    for chunk in ("1", "4"):
        assert main(["normal", str(small_video), "--model", str(tiny_normal_prior), "--decode-chunk", chunk,
                     "-o", str(tmp_path / f"c{chunk}"), "-q"]) == 0
    with np.load(tmp_path / "c1/clip/normal.npz") as a, np.load(tmp_path / "c4/clip/normal.npz") as b:
        np.testing.assert_allclose(a["normal"], b["normal"], atol=1e-4)
