"""Camera intrinsics from values, a field of view and calibration files; every bad input in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.geometry import DEFAULT_FOV_DEG, parse_intrinsics, unproject
from bufferanytime.synthetic import render_video, write_video_dir
from tests.helpers import run_main


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
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 321, 240.5)  # OpenCV pixel centres by default: + 0.5
    k = parse_intrinsics("500,510,320.5,240", pixel_centres="colmap").resolve(480, 640)
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320.5, 240)
    # values given for 1280x960 frames, used on 640x480 ones: scaled (after the pixel-centre offset)
    k = parse_intrinsics("1000,1000,639.5,479.5,1280,960").resolve(480, 640)
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
    (("500,500,320,240", None, "corner"), "--pixel-centres must be one of opencv, colmap"),
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
    ("500\n500\n320\n", "bare numbers must be fx fy cx cy"),
    ("500 0 320\n0 500 240\n0 1 1\n", "bare numbers must be"),
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


def _project_opencv(point, fx, fy, cx, cy):
    """OpenCV's pinhole projection (x right, y down, z forward; the top-left pixel's centre at (0, 0))."""
    x, y, z = point
    return fx * x / z + cx, fy * y / z + cy


@pytest.mark.parametrize("as_file", [False, True])
def test_opencv_intrinsics_round_trip_a_point(tmp_path, as_file):
    """A point projected with OpenCV intrinsics onto the centre of a pixel unprojects, from that pixel's depth, to
    itself; read in COLMAP's convention instead, it lands half a pixel off (1.4 mm at 1 m here)."""
    fx, fy, cx, cy = 500.0, 510.0, 319.5, 239.5
    row, col, z = 188, 451, 1.0
    point_cv = np.array([(col - cx) / fx * z, (row - cy) / fy * z, z])  # metres, OpenCV camera axes
    assert _project_opencv(point_cv, fx, fy, cx, cy) == pytest.approx((col, row))  # the centre of that pixel
    source = f"{fx},{fy},{cx},{cy}"
    if as_file:
        (tmp_path / "intrinsics.txt").write_text(f"{fx}\n{fy}\n{cx}\n{cy}\n")
        source = str(tmp_path / "intrinsics.txt")
    point = point_cv * [1, -1, -1]  # this tool's camera axes: y up, z towards the camera
    depth = np.full((480, 640), point_cv[2])
    k = parse_intrinsics(source).resolve(480, 640)
    assert unproject(depth, k)[row, col] == pytest.approx(point, abs=1e-12)
    assert k.to_meta()["given_pixel_centres"] == "opencv" and k.to_meta()["pixel_centres"] == "colmap"
    off = parse_intrinsics(source, pixel_centres="colmap").resolve(480, 640)
    assert np.linalg.norm(unproject(depth, off)[row, col] - point) == pytest.approx(1.4e-3, rel=0.1)


def test_meta_written_and_read_back_keeps_the_camera(tmp_path):
    k = parse_intrinsics("500,510,319.5,239.5").resolve(480, 640)
    meta = tmp_path / "depth.meta.json"
    meta.write_text(json.dumps({"intrinsics": k.to_meta()}))
    again = parse_intrinsics(str(meta)).resolve(480, 640)
    assert (again.fx, again.fy, again.cx, again.cy) == (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320, 240)


def test_deepv2d_intrinsics_txt(tmp_path):
    """DeepV2D's intrinsics.txt: numpy.savetxt of (fx, fy, cx, cy), one value per line; also on one line."""
    path = tmp_path / "intrinsics.txt"
    path.write_text("5.188579101562500000e+02\n5.194696044921875000e+02\n3.255824584960937500e+02\n"
                    "2.537361602783203125e+02\n")
    spec = parse_intrinsics(str(path))
    assert not spec.warnings
    k = spec.resolve(480, 640)
    assert (k.fx, k.fy) == pytest.approx((518.8579, 519.4696), abs=1e-4)
    assert (k.cx, k.cy) == pytest.approx((326.0825, 254.2362), abs=1e-4)  # OpenCV pixel centres + 0.5
    assert "fx fy cx cy" in k.source
    path.write_text("518.5 519.5 325.5 253.5\n")
    assert parse_intrinsics(str(path)).resolve(480, 640).cx == 326.0
    path.write_text("500 0 320\n0 510 240\n0 0 1\n")  # a 3x3 K as numpy.savetxt writes it
    k = parse_intrinsics(str(path)).resolve(480, 640)
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320.5, 240.5)


KITTI360_PERSPECTIVE = """\
calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_00: 1.392000e+03 5.120000e+02
K_00: 7.880000e+02 0.000000e+00 6.870000e+02 0.000000e+00 7.860000e+02 3.170000e+02 0.000000e+00 0.000000e+00 \
1.000000e+00
D_00: -3.442321e-01 1.675699e-01 6.074705e-04 -4.277343e-04 -4.930000e-02
R_00: 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00 0.000000e+00 0.000000e+00 \
1.000000e+00
T_00: 0.000000e+00 0.000000e+00 0.000000e+00
S_rect_00: 1.408000e+03 3.760000e+02
R_rect_00: 9.999974e-01 -7.102928e-04 -1.722812e-03 7.097533e-04 9.999997e-01 -3.139311e-04 1.723034e-03 \
3.127075e-04 9.999985e-01
P_rect_00: 5.528000e+02 0.000000e+00 6.820498e+02 0.000000e+00 0.000000e+00 5.528000e+02 2.384026e+02 \
0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
S_01: 1.392000e+03 5.120000e+02
K_01: 7.940000e+02 0.000000e+00 6.790000e+02 0.000000e+00 7.910000e+02 3.240000e+02 0.000000e+00 0.000000e+00 \
1.000000e+00
S_rect_01: 1.408000e+03 3.760000e+02
P_rect_01: 5.528000e+02 0.000000e+00 6.820498e+02 -3.264600e+02 0.000000e+00 5.528000e+02 2.384026e+02 \
0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
"""


def test_kitti360_perspective_txt(tmp_path):
    """KITTI-360's calibration/perspective.txt: the rectified left camera (P_rect_00) at its 1408x376 size."""
    path = tmp_path / "perspective.txt"
    path.write_text(KITTI360_PERSPECTIVE)
    k = parse_intrinsics(str(path)).values
    assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((552.8, 552.8, 682.5498, 238.9026))
    assert (k.width, k.height) == (1408, 376) and "P_rect_00" in k.source
    half = parse_intrinsics(str(path)).resolve(188, 704)
    assert (half.fx, half.cx) == pytest.approx((276.4, 341.2749))
    path.write_text("\n".join(line for line in KITTI360_PERSPECTIVE.splitlines() if "rect" not in line))
    k = parse_intrinsics(str(path)).values  # unrectified only: K_00 at S_00's 1392x512
    assert (k.fx, k.cx, k.width, k.height) == (788, 687.5, 1392, 512) and "K_00" in k.source


def test_kitti_raw_cam_to_cam_prefers_the_left_colour_camera(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    lines = KITTI360_PERSPECTIVE.splitlines()
    colour = ["S_rect_02: 1.242000e+03 3.750000e+02",
              "P_rect_02: 7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 2.163791e-01 0 0 1 "
              "2.745884e-03"]
    path.write_text("\n".join(lines + colour) + "\n")
    k = parse_intrinsics(str(path)).values
    assert (k.fx, k.cx, k.width, k.height) == (721.5377, 610.0593, 1242, 375) and "P_rect_02" in k.source


def test_pixel_centres_override_a_file_format_with_a_warning(tmp_path):
    cams = tmp_path / "cameras.txt"
    cams.write_text("1 PINHOLE 640 480 500 505 320 240\n")
    spec = parse_intrinsics(str(cams), pixel_centres="opencv")
    assert spec.values.cx == 320.5 and spec.values.given_pixel_centres == "opencv"
    assert spec.warnings == (f"warning: --intrinsics {cams}: the format's cx, cy are colmap pixel centres; read as "
                             "opencv as --pixel-centres says",)
    spec = parse_intrinsics(str(cams), pixel_centres="colmap")
    assert spec.values.cx == 320 and not spec.warnings


def test_depth_records_the_pixel_centres_it_was_given(tiny_depth_prior, tmp_path, capsys):
    video = write_video_dir(render_video(50003, 2, (24, 32)), tmp_path / "clip")
    calib = tmp_path / "intrinsics.txt"
    calib.write_text("30\n30\n15.5\n11.5\n")
    runs = {"numbers": ("--intrinsics", "30,30,15.5,11.5"), "colmap": ("--intrinsics", "30,30,15.5,11.5",
            "--pixel-centers", "colmap"), "file": ("--intrinsics", str(calib))}
    for name, options in runs.items():
        code, err = run_main(capsys, "depth", str(video / "rgb"), "--model", str(tiny_depth_prior), "-o",
                             str(tmp_path / name), "--save", "npz,ply", "--max-res", "32", "-q", *options)
        assert code == 0 and not [line for line in err if "pixel" in line], err
        k = json.loads((tmp_path / name / "rgb/depth.meta.json").read_text())["intrinsics"]
        given = "colmap" if name == "colmap" else "opencv"
        assert (k["cx"], k["cy"]) == ((15.5, 11.5) if given == "colmap" else (16.0, 12.0))
        assert k["pixel_centres"] == "colmap" and k["given_pixel_centres"] == given
        assert len(list((tmp_path / name / "rgb").glob("depth_ply/*.ply"))) == 2


def test_an_unknown_pixel_centre_convention_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(capsys, "depth", str(tmp_path / "missing.mp4"), "-o", str(out), "--intrinsics",
                         "30,30,15,11", "--pixel-centres", "corner")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "--pixel-centres" in err[0], err
    assert not out.exists()
