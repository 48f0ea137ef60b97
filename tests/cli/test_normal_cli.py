"""`bufferanytime normal` end to end: the shared I/O and CLI conventions of `depth`, on the normal model."""

from __future__ import annotations

import json

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
    assert not (tmp_path / "out").exists()
    for chunk in ("1", "4"):
        assert main(["normal", str(small_video), "--model", str(tiny_normal_prior), "--decode-chunk", chunk,
                     "--max-res", "64", "-o", str(tmp_path / f"c{chunk}"), "-q"]) == 0
    with np.load(tmp_path / "c1/clip/normal.npz") as a, np.load(tmp_path / "c4/clip/normal.npz") as b:
        np.testing.assert_allclose(a["normal"], b["normal"], atol=1e-4)


def test_normal_uses_marigold_size_by_default_and_records_it(tiny_normal_prior, small_video, tmp_path, capsys):
    """Without size options a Marigold prior runs at its processing resolution, 768 on the long side (enlarged)."""
    assert main(["normal", str(small_video), "--model", str(tiny_normal_prior), "--max-frames", "2", "--save", "npz",
                 "-o", str(tmp_path / "out"), "-q"]) == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "out/clip/normal.meta.json").read_text())
    assert meta["inference_size"] == [576, 768] and meta["input_size"] == [48, 64]
    assert meta["size_rule"] == {"long_side": 768, "upscale": True, "from": "model"}
    with np.load(tmp_path / "out/clip/normal.npz") as npz:
        assert npz["normal"].shape == (2, 48, 64, 3)
