import warnings

import numpy as np
import pytest

from mvs.errors import MVSInputError
from mvs.io.cam import DepthLine, read_cam, write_cam
from tests.conftest import random_camera, shared_scene

EXTRINSIC = """extrinsic
1 0 0 10
0 1 0 -5
0 0 1 600
0 0 0 1
"""
INTRINSIC = """intrinsic
2890 0 800
0 2890 600
0 0 1
"""


def cam_text(depth_line: str, intrinsic: str = INTRINSIC, extrinsic: str = EXTRINSIC) -> str:
    return f"{extrinsic}\n{intrinsic}\n{depth_line}\n"


def write(tmp_path, text, name="00000000_cam.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_round_trip(tmp_path, rng):
    camera = random_camera(rng)
    path = tmp_path / "c.txt"
    write_cam(path, camera)
    back = read_cam(path)
    np.testing.assert_allclose(back.intrinsics, camera.intrinsics, rtol=1e-9)
    np.testing.assert_allclose(back.extrinsics, camera.extrinsics, rtol=1e-9, atol=1e-9)
    assert back.depth_min == pytest.approx(camera.depth_min)
    assert back.depth_max == pytest.approx(camera.depth_max)
    assert back.depth_num == 192


def test_round_trip_min_max(tmp_path, rng):
    camera = random_camera(rng)
    path = tmp_path / "c.txt"
    write_cam(path, camera, depth_line="min_max")
    back = read_cam(path, depth_line=DepthLine.MIN_MAX)
    assert (back.depth_min, back.depth_max) == pytest.approx((camera.depth_min, camera.depth_max))


@pytest.mark.parametrize(
    "line, expected_max, expected_num",
    [
        ("425 2.5", 425 + 2.5 * 191, None),  # MVSNet: 192 planes implied
        ("425 2.5 100", 425 + 2.5 * 99, 100),
        ("425 2.5 192 935", 935.0, 192),
    ],
)
def test_depth_line_variants(tmp_path, line, expected_max, expected_num):
    cam = read_cam(write(tmp_path, cam_text(line)))
    assert cam.depth_min == 425
    assert cam.depth_max == pytest.approx(expected_max)
    assert cam.depth_num == expected_num


def test_min_max_only_when_asked(tmp_path):
    path = write(tmp_path, cam_text("425 935"))
    assert read_cam(path, depth_line="min_max").depth_max == 935
    # Read the default way, "425 935" means an interval of 935: it must not be silently
    # reinterpreted, and the user is told about the option.
    with pytest.warns(UserWarning, match="min_max"):
        cam = read_cam(path)
    assert cam.depth_max == pytest.approx(425 + 935 * 191)


def test_dtu_style_file_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_cam(write(tmp_path, cam_text("425 2.5")))


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (EXTRINSIC + "\nintrinsic\n2890 0 800\n0 2890 600\n", 10, "ends inside the intrinsic"),
        (cam_text("425 2.5").replace("2890 0 800", "2890 0 abc"), 8, "'abc'"),
        (cam_text("425 2.5").replace("0 1 0 -5", "0 1 0"), 3, "has 3 values"),
        (cam_text("425 2.5").replace("2890 0 800", "0 0 800"), None, "not invertible"),
        (cam_text("425 2.5").replace("0 0 1 600", "0 0 1 nan"), 4, "not finite"),
        (cam_text("-1 2.5"), 12, "DEPTH_MIN must be > 0"),
        (cam_text("0 2.5"), 12, "DEPTH_MIN must be > 0"),
        (cam_text("425 -2.5"), 12, "DEPTH_INTERVAL must be > 0"),
        (cam_text("425 2.5 192 400"), 12, "inverted"),
        (cam_text("425 2.5 1 2 3"), 12, "5 values"),
        (EXTRINSIC + "\n" + INTRINSIC, 11, "no depth line"),
        (INTRINSIC + "\n425 2.5\n", None, "no 'extrinsic' header"),
        (cam_text("425 2.5").replace("0 0 1 600", "0 0 2 600"), None, "not a proper rotation"),
    ],
)
def test_malformed_files_name_file_line_and_problem(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    with pytest.raises(MVSInputError) as info:
        read_cam(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    if line is not None:
        assert info.value.line == line and f"line {line}" in message


def test_missing_file(tmp_path):
    with pytest.raises(MVSInputError, match="not found"):
        read_cam(tmp_path / "nope_cam.txt")


@pytest.mark.realdata
def test_reads_real_dtu_and_middlebury_cams():
    dtu = read_cam(shared_scene("dtu_scan24") / "cams" / "00000000_cam.txt")
    assert (dtu.depth_min, dtu.depth_max) == pytest.approx((425.0, 902.5))
    temple = read_cam(shared_scene("middlebury_templeSparseRing") / "cams" / "00000000_cam.txt")
    assert temple.depth_num == 192
    assert 0.1 < temple.depth_min < temple.depth_max < 2.0  # metres
