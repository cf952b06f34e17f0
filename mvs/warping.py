"""Differentiable plane-sweep warping of source-view features into the reference view.

Each reference pixel carries its own depth hypotheses (B, D, H, W), so the same routine
serves the first cascade stage (fronto-parallel planes) and later stages (per-pixel
ranges around the previous estimate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_pixel_coordinates
from kornia.geometry.linalg import transform_points

from mvs.geometry import MIN_DEPTH, camera_to_pixels, pixel_rays, relative_transform

_PIXEL_TOLERANCE = 1e-3


def warp_source_to_reference(
    source_features: torch.Tensor,
    reference_intrinsics: torch.Tensor,
    reference_extrinsics: torch.Tensor,
    source_intrinsics: torch.Tensor,
    source_extrinsics: torch.Tensor,
    depth_hypotheses: torch.Tensor,
    padding_mode: str = "zeros",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a source feature map at the reprojection of every reference pixel and depth.

    Intrinsics must already match the feature maps' resolution (scale them with
    :meth:`mvs.cameras.Camera.resized` or by the pyramid level's factor).

    Args:
        source_features: (B, C, Hs, Ws) source-view features.
        reference_intrinsics: (B, 3, 3) for the (H, W) reference grid.
        reference_extrinsics: (B, 4, 4) world-to-camera.
        source_intrinsics: (B, 3, 3) for the (Hs, Ws) source grid.
        source_extrinsics: (B, 4, 4) world-to-camera.
        depth_hypotheses: (B, D, H, W) reference-frame z per pixel and hypothesis.
        padding_mode: ``grid_sample`` padding for points outside the source image.

    Returns:
        warped: (B, C, D, H, W) source features seen from the reference view.
        valid: (B, D, H, W) bool, True where the point projects in front of the source
            camera and inside its image.
    """
    batch, channels, src_height, src_width = source_features.shape
    _, num_depths, height, width = depth_hypotheses.shape

    rays = pixel_rays(reference_intrinsics, height, width)  # (B, H, W, 3), z = 1
    points_ref = rays[:, None] * depth_hypotheses[..., None]  # (B, D, H, W, 3)
    ref_to_src = relative_transform(reference_extrinsics, source_extrinsics)  # (B, 4, 4)
    points_src = transform_points(ref_to_src, points_ref.reshape(batch, -1, 3))  # (B, D*H*W, 3)

    in_front = points_src[..., 2] > MIN_DEPTH  # (B, D*H*W)
    pixels = camera_to_pixels(points_src, source_intrinsics)  # (B, D*H*W, 2)
    # Inside means between the outermost pixel centres, where bilinear sampling needs no padding.
    inside = (
        (pixels[..., 0] >= -_PIXEL_TOLERANCE)
        & (pixels[..., 0] <= src_width - 1 + _PIXEL_TOLERANCE)
        & (pixels[..., 1] >= -_PIXEL_TOLERANCE)
        & (pixels[..., 1] <= src_height - 1 + _PIXEL_TOLERANCE)
    )
    grid = normalize_pixel_coordinates(pixels, src_height, src_width)  # align_corners=True
    # Send invalid points far outside so zero padding gives exactly zero there.
    grid = torch.where(in_front[..., None], grid, torch.full_like(grid, 2.0))

    warped = F.grid_sample(
        source_features,
        grid.reshape(batch, num_depths * height, width, 2),
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=True,
    )  # (B, C, D*H, W)
    warped = warped.reshape(batch, channels, num_depths, height, width)
    valid = (in_front & inside).reshape(batch, num_depths, height, width)
    return warped, valid
