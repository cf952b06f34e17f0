"""Batched projective geometry on kornia: back-projection, projection, relative poses.

Conventions are those of :mod:`mvs.cameras`: K maps camera coordinates to pixels with
pixel centres at integer coordinates, E is world-to-camera, depth is camera-frame z.

Projection applies the full 3x3 K through kornia's homogeneous conversions. kornia's
``project_points``/``unproject_points`` use only fx, fy, cx, cy and would drop the skew
that real calibrations (DTU's among them) carry.
"""

from __future__ import annotations

import torch
from kornia.geometry import create_meshgrid
from kornia.geometry.conversions import (
    convert_points_from_homogeneous,
    convert_points_to_homogeneous,
)
from kornia.geometry.linalg import compose_transformations, inverse_transformation, transform_points

# Camera-frame z at or below which a point counts as behind the camera.
MIN_DEPTH = 1e-6


def pixel_grid(
    height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H, W, 2) pixel coordinates (x, y) of pixel centres."""
    return create_meshgrid(height, width, normalized_coordinates=False, device=device, dtype=dtype)[0]


def pixel_rays(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera-frame rays K^-1 [x, y, 1] through pixel centres (z = 1).

    Args:
        intrinsics: (B, 3, 3).

    Returns:
        (B, H, W, 3): multiplying by a depth gives the camera-frame point at that depth.
    """
    grid = convert_points_to_homogeneous(
        pixel_grid(height, width, intrinsics.device, intrinsics.dtype)
    )  # (H, W, 3)
    inverse = torch.linalg.inv(intrinsics)  # (B, 3, 3)
    return torch.einsum("hwj,bij->bhwi", grid, inverse)


def camera_to_pixels(camera_points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Project camera-frame points to pixels with the full K.

    Args:
        camera_points: (B, N, 3).
        intrinsics: (B, 3, 3).

    Returns:
        (B, N, 2) pixel coordinates; points with z <= MIN_DEPTH are projected as if at
        z = 1 (finite, meaningless): callers mask them by depth.
    """
    z = camera_points[..., 2:3]
    safe = torch.where(z > MIN_DEPTH, camera_points, torch.cat([camera_points[..., :2], torch.ones_like(z)], -1))
    homogeneous = torch.einsum("bij,bnj->bni", intrinsics, safe)  # (B, N, 3)
    return convert_points_from_homogeneous(homogeneous)


def relative_transform(from_extrinsics: torch.Tensor, to_extrinsics: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) transform from camera ``from`` coordinates to camera ``to`` coordinates.

    Both arguments are (B, 4, 4) world-to-camera extrinsics.
    """
    return compose_transformations(to_extrinsics, inverse_transformation(from_extrinsics))


def unproject_pixels(
    pixels: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> torch.Tensor:
    """World points at given pixels and depths.

    Args:
        pixels: (B, N, 2) pixel coordinates (x, y).
        depth: (B, N) camera-frame z.
        intrinsics: (B, 3, 3).
        extrinsics: (B, 4, 4) world-to-camera.

    Returns:
        (B, N, 3) world coordinates.
    """
    rays = torch.einsum("bij,bnj->bni", torch.linalg.inv(intrinsics), convert_points_to_homogeneous(pixels))
    return transform_points(inverse_transformation(extrinsics), rays * depth[..., None])


def backproject_depth(
    depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> torch.Tensor:
    """World points of every pixel of a depth map.

    Args:
        depth: (B, H, W) camera-frame z, scene units.
        intrinsics: (B, 3, 3).
        extrinsics: (B, 4, 4) world-to-camera.

    Returns:
        (B, H, W, 3) world coordinates.
    """
    batch, height, width = depth.shape
    camera_points = pixel_rays(intrinsics, height, width) * depth[..., None]  # (B, H, W, 3)
    world = transform_points(
        inverse_transformation(extrinsics), camera_points.reshape(batch, -1, 3)
    )  # (B, H*W, 3)
    return world.reshape(batch, height, width, 3)


def project_points(
    points: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into a view.

    Args:
        points: (B, N, 3) world coordinates.
        intrinsics: (B, 3, 3).
        extrinsics: (B, 4, 4) world-to-camera.

    Returns:
        pixels: (B, N, 2) pixel coordinates (x, y); meaningless where depth <= 0.
        depth: (B, N) camera-frame z (<= 0 means behind the camera).
    """
    camera_points = transform_points(extrinsics, points)  # (B, N, 3)
    return camera_to_pixels(camera_points, intrinsics), camera_points[..., 2]


def inside_image(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(…) bool: pixel coordinates (…, 2) that fall on the image (within half a pixel)."""
    x, y = pixels[..., 0], pixels[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
