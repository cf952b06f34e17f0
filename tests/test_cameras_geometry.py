import numpy as np
import pytest
import torch

from mvs.cameras import Camera, look_at, stack_cameras
from mvs.errors import MVSInputError
from mvs.geometry import backproject_depth, inside_image, project_points, relative_transform
from tests.conftest import random_camera


def project_numpy(camera: Camera, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: x = K (R X + t), pixels = x / z."""
    cam = world @ camera.rotation.T + camera.translation
    pix = cam @ camera.intrinsics.T
    return pix[:, :2] / pix[:, 2:3], cam[:, 2]


def test_look_at_points_the_optical_axis_at_the_target():
    E = look_at(np.array([100.0, 50.0, 400.0]), np.array([0.0, 0.0, 0.0]))
    camera = Camera(np.diag([500.0, 500.0, 1.0]) + np.array([[0, 0, 32], [0, 0, 24], [0, 0, 0]]), E, 64, 48, 1, 1000)
    pixels, depth = project_numpy(camera, np.zeros((1, 3)))
    np.testing.assert_allclose(pixels[0], [32, 24], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm([100, 50, 400]))
    np.testing.assert_allclose(camera.center, [100, 50, 400], atol=1e-9)
    # World "up" (+z) appears towards the top of the image (smaller y).
    up_pixel, _ = project_numpy(camera, np.array([[0.0, 0.0, 10.0]]))
    assert up_pixel[0, 1] < 24


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(intrinsics=np.zeros((3, 3))), "not invertible"),
        (dict(intrinsics=np.full((3, 3), np.nan)), "NaN"),
        (dict(extrinsics=np.eye(4) * 2), "last row"),
        (dict(depth_min=0.0), "depth_min must be > 0"),
        (dict(depth_min=10.0, depth_max=5.0), "inverted"),
        (dict(depth_max=float("nan")), "not finite"),
        (dict(depth_min=1e-6, depth_max=1e3), "orders of magnitude"),
        (dict(width=0), "image size"),
    ],
)
def test_invalid_cameras_are_rejected(rng, change, fragment):
    good = random_camera(rng)
    fields = dict(
        intrinsics=good.intrinsics, extrinsics=good.extrinsics, width=good.width,
        height=good.height, depth_min=good.depth_min, depth_max=good.depth_max,
    )
    fields.update(change)
    with pytest.raises(MVSInputError, match=fragment):
        Camera(**fields, source="cams/00000003_cam.txt")


def test_resize_and_crop_keep_projections_consistent(rng):
    camera = random_camera(rng, 160, 120)
    world = rng.normal(size=(20, 3)) * 50
    pixels, _ = project_numpy(camera, world)
    half = camera.resized(80, 60)
    half_pixels, _ = project_numpy(half, world)
    # Pixel centres at integer coordinates: u' = (u + 0.5) * s - 0.5.
    np.testing.assert_allclose(half_pixels, (pixels + 0.5) * 0.5 - 0.5, atol=1e-9)
    crop = camera.cropped(10, 20, 100, 80)
    crop_pixels, _ = project_numpy(crop, world)
    np.testing.assert_allclose(crop_pixels, pixels - [10, 20], atol=1e-9)
    with pytest.raises(MVSInputError, match="outside"):
        camera.cropped(100, 0, 100, 80)


def test_to_kornia_matches_projection(rng):
    camera = random_camera(rng)
    world = rng.normal(size=(10, 3)) * 50
    expected, _ = project_numpy(camera, world)
    pinhole = camera.to_kornia(dtype=torch.float64)
    got = pinhole.project(torch.as_tensor(world)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_project_points_matches_numpy(rng):
    cameras = [random_camera(rng) for _ in range(3)]
    world = rng.normal(size=(3, 30, 3)) * 60
    K, E = stack_cameras(cameras, dtype=torch.float64)
    pixels, depth = project_points(torch.as_tensor(world), K, E)
    for b, camera in enumerate(cameras):
        ref_pixels, ref_depth = project_numpy(camera, world[b])
        np.testing.assert_allclose(pixels[b].numpy(), ref_pixels, atol=1e-8)
        np.testing.assert_allclose(depth[b].numpy(), ref_depth, atol=1e-8)


def test_backproject_then_project_is_identity(rng):
    camera = random_camera(rng, 32, 24)
    K, E = stack_cameras([camera], dtype=torch.float64)
    depth = torch.as_tensor(rng.uniform(500, 700, size=(1, 24, 32)))
    world = backproject_depth(depth, K, E)  # (1, 24, 32, 3)
    pixels, z = project_points(world.reshape(1, -1, 3), K, E)
    ys, xs = np.mgrid[0:24, 0:32]
    np.testing.assert_allclose(pixels[0].numpy(), np.stack([xs, ys], -1).reshape(-1, 2), atol=1e-7)
    np.testing.assert_allclose(z.numpy(), depth.reshape(1, -1).numpy(), rtol=1e-10)
    # The back-projected point of pixel (x, y) lies at depth z along K^-1 [x, y, 1] from the centre.
    x, y = 5, 7
    ray = np.linalg.inv(camera.intrinsics) @ [x, y, 1.0]
    expected = camera.cam_to_world @ np.append(ray * depth[0, y, x].item(), 1.0)
    np.testing.assert_allclose(world[0, y, x].numpy(), expected[:3], atol=1e-8)


def test_points_behind_camera_report_negative_depth(rng):
    camera = random_camera(rng)
    K, E = stack_cameras([camera], dtype=torch.float64)
    behind = camera.center - 100 * camera.viewing_direction
    pixels, depth = project_points(torch.as_tensor(behind)[None, None], K, E)
    assert depth.item() < 0 and torch.isfinite(pixels).all()


def test_relative_transform(rng):
    a, b = random_camera(rng), random_camera(rng)
    T = relative_transform(*[torch.as_tensor(c.extrinsics)[None] for c in (a, b)])[0].numpy()
    np.testing.assert_allclose(T, b.extrinsics @ np.linalg.inv(a.extrinsics), atol=1e-9)


def test_inside_image():
    pixels = torch.tensor([[-0.4, 0.0], [-0.6, 0.0], [63.4, 47.4], [63.6, 10.0]])
    assert inside_image(pixels, 48, 64).tolist() == [True, False, True, False]
