import numpy as np
import pytest
import torch

from mvs.cameras import Camera, stack_cameras
from mvs.warping import warp_source_to_reference
from tests.conftest import random_camera


def bilinear_zero_pad(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """(C,) bilinear sample of (C, H, W) at (x, y), zero outside the pixel grid."""
    channels, height, width = image.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(channels)
    for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            if 0 <= xx < width and 0 <= yy < height:
                out += wx * wy * image[:, yy, xx]
    return out


def warp_reference_loop(features, ref: Camera, src: Camera, depths):
    """Independent per-pixel reference: back-project with K_ref, move to src, project, sample."""
    channels = features.shape[0]
    num_depths, height, width = depths.shape
    out = np.zeros((channels, num_depths, height, width))
    valid = np.zeros((num_depths, height, width), bool)
    K_ref_inv = np.linalg.inv(ref.intrinsics)
    ref_to_src = src.extrinsics @ ref.cam_to_world
    for d in range(num_depths):
        for y in range(height):
            for x in range(width):
                point = K_ref_inv @ np.array([x, y, 1.0]) * depths[d, y, x]
                p_src = ref_to_src[:3, :3] @ point + ref_to_src[:3, 3]
                if p_src[2] <= 0:
                    continue
                u, v, w = src.intrinsics @ p_src
                out[:, d, y, x] = bilinear_zero_pad(features, u / w, v / w)
                valid[d, y, x] = 0 <= u / w <= width - 1 and 0 <= v / w <= height - 1
    return out, valid


def close_pair(rng, width, height):
    """Two cameras a few degrees apart looking at the origin, like neighbouring MVS views."""
    ref = random_camera(rng, width, height)
    offset = rng.normal(size=3) * 40
    from mvs.cameras import look_at

    E = look_at(ref.center + offset, np.zeros(3))
    src = Camera(ref.intrinsics * [[1.02], [0.99], [1]], E, width, height, ref.depth_min, ref.depth_max)
    return ref, src


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_pixel_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    width, height, channels, num_depths = 20, 15, 3, 4
    ref, src = close_pair(rng, width, height)
    features = rng.normal(size=(channels, height, width))
    # Per-pixel hypotheses (as in a cascade's later stages), not fronto-parallel planes.
    depths = rng.uniform(450, 750, size=(num_depths, height, width))
    expected, expected_valid = warp_reference_loop(features, ref, src, depths)
    K, E = stack_cameras([ref, src], dtype=torch.float64)
    warped, valid = warp_source_to_reference(
        torch.as_tensor(features)[None], K[:1], E[:1], K[1:], E[1:], torch.as_tensor(depths)[None]
    )
    assert warped.shape == (1, channels, num_depths, height, width)
    np.testing.assert_allclose(warped[0].numpy(), expected, atol=1e-9)
    # Validity agrees except possibly within the 1e-3 px tolerance band at the border.
    assert (valid[0].numpy() != expected_valid).mean() < 0.01
    assert valid.any()


def test_identity_returns_the_features():
    rng = np.random.default_rng(5)
    camera = random_camera(rng, 24, 18)
    K, E = stack_cameras([camera], dtype=torch.float64)
    features = torch.as_tensor(rng.normal(size=(2, 4, 18, 24)))
    depths = torch.as_tensor(rng.uniform(400, 900, size=(2, 5, 18, 24)))
    warped, valid = warp_source_to_reference(features, K.expand(2, 3, 3), E.expand(2, 4, 4), K.expand(2, 3, 3), E.expand(2, 4, 4), depths)
    torch.testing.assert_close(warped, features[:, :, None].expand_as(warped), atol=1e-9, rtol=0)
    assert valid.all()


def test_points_behind_source_are_zero_and_invalid():
    rng = np.random.default_rng(7)
    ref = random_camera(rng, 16, 12)
    # Source camera placed in front of the reference, facing it: reference-frame points at
    # large depth are behind the source.
    from mvs.cameras import look_at

    src_center = ref.center + 600 * ref.viewing_direction
    src = Camera(ref.intrinsics, look_at(src_center, ref.center), 16, 12, 1, 2000)
    K, E = stack_cameras([ref, src], dtype=torch.float64)
    features = torch.ones(1, 1, 12, 16, dtype=torch.float64)
    depths = torch.full((1, 1, 12, 16), 900.0, dtype=torch.float64)
    warped, valid = warp_source_to_reference(features, K[:1], E[:1], K[1:], E[1:], depths)
    assert not valid.any()
    assert warped.abs().max() == 0


def test_gradcheck_float64():
    rng = np.random.default_rng(11)
    ref, src = close_pair(rng, 8, 6)
    K, E = stack_cameras([ref, src], dtype=torch.float64)
    features = torch.as_tensor(rng.normal(size=(1, 2, 6, 8)), dtype=torch.float64).requires_grad_()
    depths = torch.as_tensor(rng.uniform(500, 700, size=(1, 3, 6, 8)), dtype=torch.float64).requires_grad_()

    def fn(f, d):
        return warp_source_to_reference(f, K[:1], E[:1], K[1:], E[1:], d)[0]

    assert torch.autograd.gradcheck(fn, (features, depths), eps=1e-6, atol=1e-5)


def test_works_at_feature_resolution_with_scaled_intrinsics():
    """Warping quarter-resolution features with quarter-resolution cameras agrees with full resolution."""
    rng = np.random.default_rng(3)
    ref, src = close_pair(rng, 64, 48)
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.stack([np.sin(x / 9.0) + np.cos(y / 7.0)])  # smooth so downsampling preserves it
    depths = np.full((1, 48, 64), 600.0)
    K, E = stack_cameras([ref, src], dtype=torch.float64)
    full, _ = warp_source_to_reference(torch.as_tensor(smooth)[None], K[:1], E[:1], K[1:], E[1:], torch.as_tensor(depths)[None])
    ref4, src4 = ref.resized(16, 12), src.resized(16, 12)
    K4, E4 = stack_cameras([ref4, src4], dtype=torch.float64)
    ys, xs = (np.arange(12) + 0.5) * 4 - 0.5, (np.arange(16) + 0.5) * 4 - 0.5
    small_src = np.stack([np.sin(xs[None] / 9.0) + np.cos(ys[:, None] / 7.0)])
    quarter, valid = warp_source_to_reference(torch.as_tensor(small_src)[None], K4[:1], E4[:1], K4[1:], E4[1:], torch.full((1, 1, 12, 16), 600.0, dtype=torch.float64))
    full_at_quarter_centres = full[0, 0, 0].numpy()[np.round(ys).astype(int)][:, np.round(xs).astype(int)]
    q = quarter[0, 0, 0].numpy()
    mask = valid[0, 0].numpy()
    assert mask.mean() > 0.5
    assert np.abs(q - full_at_quarter_centres)[mask].mean() < 0.15
