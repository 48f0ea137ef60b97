"""Camera intrinsics from values, a field of view and calibration files; every bad input in one line."""

from __future__ import annotations

import json
import math

import pytest

from bufferanytime.errors import InputError
from bufferanytime.geometry import DEFAULT_FOV_DEG, parse_intrinsics
from bufferanytime.synthetic import render_video, write_video_dir


def test_default_is_a_60_degree_horizontal_fov_centred():
    k = parse_intrinsics().resolve(480, 640)
    assert DEFAULT_FOV_DEG == 60.0
    assert k.fx == k.fy == pytest.approx(320 / math.tan(math.radians(30)))
    assert (k.cx, k.cy) == (320, 240)
    assert k.to_meta()["source"] == "default fov 60"


def test_fov_and_values():
    k = parse_intrinsics(fov=90).resolve(100, 200)
    assert k.fx == pytest.approx(100.0) and k.source == "--fov 90"
    k = parse_intrinsics("500,510,320.5,240").resolve(480, 640)
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320.5, 240)
    # values given for 1280x960 frames, used on 640x480 ones: scaled
    k = parse_intrinsics("1000,1000,640,480,1280,960").resolve(480, 640)
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (500, 500, 320, 240, 640, 480)
    assert "scaled from 1280x960" in k.source


def test_synthetic_meta_json_gives_the_ground_truth_camera(tmp_path):
    video = render_video(50001, 2, (24, 32))
    folder = write_video_dir(video, tmp_path / "v")
    k = parse_intrinsics(str(folder / "meta.json")).resolve(48, 64)  # frames twice the rendered size
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(k, name) == pytest.approx(2 * video.intrinsics[name])
    assert parse_intrinsics(str(folder / "meta.json")).resolve(24, 32).fx == pytest.approx(video.intrinsics["fx"])


def test_kitti_calibration_lines(tmp_path):
    p2 = tmp_path / "calib.txt"
    p2.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nP2: 721.5 0 609.5 44.8 0 721.5 172.8 0.2 0 0 1 0.003\n")
    k = parse_intrinsics(str(p2)).resolve(375, 1242)
    assert (k.fx, k.fy, k.cx, k.cy) == (721.5, 721.5, 610.0, 173.3)  # OpenCV pixel centres + 0.5
    k3 = tmp_path / "k.txt"
    k3.write_text("calib_time: 09-Jan-2012 13:57:47\nS_rect_02: 1.242e+03 3.75e+02\nK: 700 0 600 0 710 180 0 0 1\n")
    k = parse_intrinsics(str(k3)).resolve(750, 2484)
    assert (k.fx, k.fy, k.cx, k.cy) == (1400, 1420, 1201, 361)


def test_colmap_cameras(tmp_path):
    cams = tmp_path / "cameras.txt"
    cams.write_text("# Camera list with one line of data per camera:\n# Number of cameras: 1\n"
                    "1 PINHOLE 640 480 500 505 320 240\n")
    spec = parse_intrinsics(str(cams))
    assert not spec.warnings
    k = spec.resolve(240, 320)
    assert (k.fx, k.fy, k.cx, k.cy) == (250, 252.5, 160, 120)
    cams.write_text("1 SIMPLE_RADIAL 640 480 500 320 240 0.01\n2 PINHOLE 10 10 5 5 5 5\n")
    spec = parse_intrinsics(str(cams))
    assert (spec.values.fx, spec.values.fy) == (500, 500)
    assert len(spec.warnings) == 2 and "distortion" in spec.warnings[0]
    cams.write_text("1 OPENCV 640 480 500 501 320 240 0.1 0.01 0 0\n")
    assert parse_intrinsics(str(cams)).values.fy == 501


@pytest.mark.parametrize(("args", "expect"), [
    (("500,500,320",), "expected 4 values"),
    (("500,500,320,240,1",), "expected 4 values"),
    (("-500,500,320,240",), "focal lengths must be positive"),
    (("0,500,320,240",), "focal lengths must be positive"),
    (("500,500,320,240,0,480",), "positive whole numbers"),
    (("no/such/file.txt",), "no such file"),
    ((None, 0.0), "between 0 and 180"),
    ((None, 180.0), "between 0 and 180"),
    (("500,500,320,240", 60.0), "not both"),
])
def test_bad_values_are_refused(args, expect):
    with pytest.raises(InputError, match=expect):
        parse_intrinsics(*args)


@pytest.mark.parametrize(("text", "expect"), [
    ("hello world\n", "cannot parse"),
    ("P2: 1 2 3\n", "expected 9 .3x3. or 12"),
    ("P2: -700 0 600 0 0 700 180 0 0 0 1 0\n", "focal lengths must be positive"),
    ('{"intrinsics": {"fx": 1}}', "usable 'intrinsics'"),
    ("{not json", "usable 'intrinsics'"),
    ("1 PINHOLE 640 480 500\n", "too few or bad parameters"),
    ("R0_rect: 1 0 0 0 1 0 0 0 1\nTr: 1 0 0 0 0 1 0 0 0 0 1 0\n", "without a P2:"),
])
def test_unparsable_files_are_refused(tmp_path, text, expect):
    path = tmp_path / "calib.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=expect):
        parse_intrinsics(str(path))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "calib.bin"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputError, match="cannot"):
        parse_intrinsics(str(path))
    json.dumps(parse_intrinsics().resolve(8, 8).to_meta())  # the meta entry is JSON
