import struct

import numpy as np
import pytest

from mvs.errors import MVSInputError
from mvs.io import (
    read_image,
    read_mask,
    read_pair,
    read_pfm,
    read_point_attributes,
    read_point_cloud,
    write_image,
    write_mask,
    write_pair,
    write_pfm,
    write_point_cloud,
)
from mvs.io.images import decode_image, image_size

# ----------------------------------------------------------------------------- pair.txt


def test_pair_round_trip(tmp_path):
    pairs = {0: [(1, 12.5), (2, 3.25)], 1: [(0, 12.5)], 2: []}
    write_pair(tmp_path / "pair.txt", pairs)
    assert read_pair(tmp_path / "pair.txt") == pairs


def test_pair_reads_published_layout(tmp_path):
    (tmp_path / "pair.txt").write_text("2\n0\n2 1 2.5 7 1.0\n1\n1 0 2.5\n")
    assert read_pair(tmp_path / "pair.txt") == {0: [(1, 2.5), (7, 1.0)], 1: [(0, 2.5)]}


@pytest.mark.parametrize(
    "text, fragment, line",
    [
        ("", "empty", None),
        ("x\n", "view count must be an integer", 1),
        ("2\n0\n1 1 2.0\n", "declares 2 views", 4),
        ("1\n0\n2 1 2.0\n", "declares 2 source views", 3),
        ("1\n0\n1 a 2.0\n", "source view id must be an integer", 3),
        ("1\n0\n1 1 b\n", "score must be a number", 3),
        ("1\n0\n1 0 1.0\n", "lists itself", 3),
        ("2\n0\n1 1 1.0\n0\n1 1 1.0\n", "listed twice", 4),
    ],
)
def test_pair_malformed(tmp_path, text, fragment, line):
    path = tmp_path / "pair.txt"
    path.write_text(text)
    with pytest.raises(MVSInputError) as info:
        read_pair(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert info.value.line == line


# ----------------------------------------------------------------------------- PFM


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3)])
def test_pfm_round_trip(tmp_path, shape, little_endian):
    array = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    write_pfm(tmp_path / "a.pfm", array, little_endian=little_endian)
    np.testing.assert_array_equal(read_pfm(tmp_path / "a.pfm"), array)


@pytest.mark.parametrize("endian, scale", [("<", -1.0), (">", 1.0)])
def test_pfm_is_bottom_up_on_disk(tmp_path, endian, scale):
    # Written by hand, independently of write_pfm: first stored row is the image's bottom row.
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]  # bottom-up as stored
    payload = b"".join(struct.pack(f"{endian}2f", *r) for r in rows)
    (tmp_path / "h.pfm").write_bytes(f"Pf\n2 3\n{scale}\n".encode() + payload)
    np.testing.assert_array_equal(read_pfm(tmp_path / "h.pfm"), [[5, 6], [3, 4], [1, 2]])


def test_pfm_errors(tmp_path):
    (tmp_path / "bad.pfm").write_bytes(b"P6\n2 2\n255\n")
    with pytest.raises(MVSInputError, match="not a PFM"):
        read_pfm(tmp_path / "bad.pfm")
    write_pfm(tmp_path / "t.pfm", np.ones((8, 8), np.float32))
    data = (tmp_path / "t.pfm").read_bytes()
    (tmp_path / "t.pfm").write_bytes(data[:-10])
    with pytest.raises(MVSInputError, match="truncated"):
        read_pfm(tmp_path / "t.pfm")
    with pytest.raises(MVSInputError, match="not found"):
        read_pfm(tmp_path / "missing.pfm")


# ----------------------------------------------------------------------------- images, masks


def test_image_round_trip_is_rgb(tmp_path):
    image = np.zeros((6, 9, 3), np.uint8)
    image[..., 0] = 200  # pure red must stay in channel 0 (opencv stores BGR)
    write_image(tmp_path / "i.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "i.png"), image)
    mask = np.eye(5, dtype=bool)
    write_mask(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


def test_exif_orientation_is_ignored(tmp_path):
    """A phone photo tagged 'rotate 90' is read as stored, the layout its calibration uses."""
    from PIL import Image

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(stored[..., 0]).save(tmp_path / "mask.png")
    assert image_size(tmp_path / "phone.jpg") == (40, 20)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (20, 40, 3) and image[:, :15].min() > 200 and image[:, 25:].max() < 50
    decoded = decode_image((tmp_path / "phone.jpg").read_bytes(), "phone.jpg")
    np.testing.assert_array_equal(decoded, image)
    assert read_mask(tmp_path / "mask.png").shape == (20, 40)


def test_corrupt_images(tmp_path):
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(MVSInputError, match="not a readable image"):
        read_image(tmp_path / "c.jpg")
    with pytest.raises(MVSInputError, match="not a readable image"):
        decode_image(b"garbage", "upload.png")


# ----------------------------------------------------------------------------- PLY


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(50, 3)) * 100
    colors = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)
    write_point_cloud(tmp_path / "p.ply", points, colors, binary=binary)
    back, back_colors = read_point_cloud(tmp_path / "p.ply")
    # ASCII PLY keeps about 6 significant digits.
    np.testing.assert_allclose(back, points, rtol=1e-12 if binary else 1e-5, atol=0 if binary else 1e-3)
    np.testing.assert_array_equal(back_colors, colors)
    if binary:
        assert b"binary_little_endian" in (tmp_path / "p.ply").read_bytes()[:200]


@pytest.mark.parametrize("binary", [True, False])
def test_ply_extra_vertex_properties(tmp_path, binary):
    rng = np.random.default_rng(4)
    points = rng.normal(size=(40, 3)) * 100
    colors = rng.integers(0, 256, size=(40, 3), dtype=np.uint8)
    normals = rng.normal(size=(40, 3))
    views = rng.integers(0, 49, size=40).astype(np.int32)
    weights = rng.random(40).astype(np.float32)
    write_point_cloud(tmp_path / "p.ply", points, colors, normals, binary=binary,
                      extra={"source_view": views, "weight": weights})
    header = (tmp_path / "p.ply").read_bytes().split(b"end_header")[0]
    assert b"property int source_view" in header and b"property float weight" in header
    attributes = read_point_attributes(tmp_path / "p.ply")
    np.testing.assert_array_equal(attributes["source_view"], views)
    np.testing.assert_allclose(attributes["weight"], weights, rtol=0 if binary else 1e-5, atol=0 if binary else 1e-6)
    np.testing.assert_array_equal(attributes["colors"], colors)
    np.testing.assert_allclose(attributes["positions"], points, rtol=1e-12 if binary else 1e-5, atol=0 if binary else 1e-3)
    np.testing.assert_allclose(attributes["normals"], normals, rtol=1e-12 if binary else 1e-5, atol=0 if binary else 1e-5)
    # Readers that only know points and colours still read the file.
    back, back_colors = read_point_cloud(tmp_path / "p.ply")
    np.testing.assert_array_equal(back_colors, colors)
    # An empty cloud keeps the properties in its header.
    write_point_cloud(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8), binary=binary,
                      extra={"source_view": np.zeros(0, np.int32)})
    empty = read_point_attributes(tmp_path / "e.ply")
    assert empty["source_view"].shape == (0,) and empty["source_view"].dtype == np.int32
    assert empty["colors"].shape == (0, 3)


def test_ply_extra_property_errors(tmp_path):
    points = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"must be \(3,\)"):
        write_point_cloud(tmp_path / "x.ply", points, extra={"source_view": np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match="not allowed"):
        write_point_cloud(tmp_path / "x.ply", points, extra={"red": np.zeros(3, np.uint8)})
    with pytest.raises(ValueError, match="no PLY type"):
        write_point_cloud(tmp_path / "x.ply", points, extra={"ids": np.zeros(3, np.int64)})


def test_ply_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        write_point_cloud(tmp_path / "x.ply", np.zeros((4, 2)))
    (tmp_path / "bad.ply").write_bytes(b"not a ply at all")
    with pytest.raises(MVSInputError, match="not a PLY"):
        read_point_cloud(tmp_path / "bad.ply")


@pytest.mark.parametrize("binary", [True, False])
def test_an_empty_cloud_is_a_valid_ply(tmp_path, binary):
    # Everything filtered out is an answer, not an error: open3d alone refuses to write it.
    write_point_cloud(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8), binary=binary)
    points, colors = read_point_cloud(tmp_path / "e.ply")
    assert points.shape == (0, 3) and colors.shape == (0, 3)
    write_point_cloud(tmp_path / "n.ply", np.zeros((0, 3)))
    points, colors = read_point_cloud(tmp_path / "n.ply")
    assert points.shape == (0, 3) and colors is None
