"""Differentiable plane-sweep warping of source-view features into the reference view.

Each reference pixel carries its own depth hypotheses (B, D, H, W), so the same routines
serve the first cascade stage (fronto-parallel planes) and later stages (per-pixel
ranges around the previous estimate).

Two implementations of one convention (pixel centres at integers, ``align_corners=True``,
zero padding, the same validity rule):

- :func:`warp_source_to_reference`: the direct one on kornia's transforms (3D points per
  pixel and hypothesis); any padding mode. Used by the self-supervised loss and as the
  reference the fast path is tested against.
- :func:`warp_features`: the network's fast path. The per-pixel part of the projection
  is computed once (:func:`projection_factors`), so each hypothesis costs a few
  multiply-adds; :func:`sample_source` takes any band of reference rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_pixel_coordinates
from kornia.geometry.linalg import transform_points

from mvs.geometry import MIN_DEPTH, camera_to_pixels, pixel_rays, relative_transform

# Tolerance (pixels) of "inside the source image".
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


def projection_factors(
    reference_intrinsics: torch.Tensor,
    reference_extrinsics: torch.Tensor,
    source_intrinsics: torch.Tensor,
    source_extrinsics: torch.Tensor,
    height: int,
    width: int,
    source_height: int,
    source_width: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separable terms of the reference -> source projection in grid_sample coordinates.

    The homogeneous source pixel of reference pixel (x, y) at depth d is
    ``d * (K_s R K_r^-1 [x, y, 1]) + K_s t`` (R, t: reference-to-source pose). Folding the
    normalisation to grid_sample's [-1, 1] range (``align_corners=True``) into the same
    linear map M, the grid coordinate is ``(d * direction[:2] + offset[:2]) /
    (d * direction[2] + offset[2])`` with ``direction = M [x, y, 1] = columns[x] +
    rows[y]``; the denominator is the source-camera z.

    Args:
        reference_intrinsics: (B, 3, 3) for the (height, width) reference grid.
        reference_extrinsics: (B, 4, 4) world-to-camera.
        source_intrinsics: (B, 3, 3) for the (source_height, source_width) grid.
        source_extrinsics: (B, 4, 4) world-to-camera.

    Returns:
        columns (B, 3, W), rows (B, 3, H), offset (B, 3, 1, 1), all ``dtype``; the 3x3
        algebra is done in float64, so any scene units are fine.
    """
    geometry = torch.float64
    device = source_intrinsics.device
    ref_to_src = relative_transform(
        reference_extrinsics.to(geometry), source_extrinsics.to(geometry)
    )  # (B, 4, 4)
    src_K = source_intrinsics.to(geometry)  # (B, 3, 3)
    sx, sy = 2.0 / max(source_width - 1, 1), 2.0 / max(source_height - 1, 1)
    to_grid = torch.tensor(
        [[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], dtype=geometry, device=device
    )  # (3, 3): pixel -> [-1, 1] (x_n = x * 2 / (Ws - 1) - 1)
    linear = (
        to_grid
        @ src_K
        @ ref_to_src[:, :3, :3]
        @ torch.linalg.inv(reference_intrinsics.to(geometry))
    )  # (B, 3, 3)
    offset = to_grid @ src_K @ ref_to_src[:, :3, 3:4]  # (B, 3, 1)
    xs = torch.arange(width, dtype=geometry, device=device)  # (W,) pixel centres
    ys = torch.arange(height, dtype=geometry, device=device)  # (H,)
    columns = linear[:, :, 0:1] * xs + linear[:, :, 2:3]  # (B, 3, W)
    rows = linear[:, :, 1:2] * ys  # (B, 3, H)
    return columns.to(dtype), rows.to(dtype), offset[..., None].to(dtype)


def projection_terms(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`projection_factors` as a full (B, 3, H, W) ``direction`` and (B, 3, 1, 1) offset."""
    columns, rows, offset = projection_factors(*args, **kwargs)
    return columns[:, :, None, :] + rows[:, :, :, None], offset


def sample_source(
    source_features: torch.Tensor,
    direction: torch.Tensor,
    offset: torch.Tensor,
    depth_hypotheses: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp with precomputed :func:`projection_terms` (any band of reference rows).

    Args:
        source_features: (B, C, Hs, Ws).
        direction: (B, 3, h, W) and offset (B, 3, 1, 1) from :func:`projection_terms`
            (sliced to the same rows as the hypotheses).
        depth_hypotheses: (B, D, h, W) reference-frame z, scene units.

    Returns:
        warped (B, C, D, h, W) zero where not ``valid``; valid (B, D, h, W) bool: in front
        of the source camera and within ``_PIXEL_TOLERANCE`` px of its outermost pixel
        centres.
    """
    batch, channels, src_height, src_width = source_features.shape
    _, num_depths, height, width = depth_hypotheses.shape
    depth = depth_hypotheses.to(direction.dtype)  # (B, D, h, W)
    z = torch.addcmul(offset[:, 2:3], depth, direction[:, 2:3])  # (B, D, h, W) source z
    in_front = z > MIN_DEPTH  # (B, D, h, W)
    inv_z = z.reciprocal_()  # (B, D, h, W); meaningless where not in front (masked below)
    grid_x = torch.addcmul(offset[:, 0:1], depth, direction[:, 0:1]).mul_(inv_z)  # (B, D, h, W)
    grid_y = torch.addcmul(offset[:, 1:2], depth, direction[:, 1:2]).mul_(inv_z)  # (B, D, h, W)
    valid = (
        in_front
        & (grid_x.abs() <= 1.0 + _PIXEL_TOLERANCE * 2.0 / max(src_width - 1, 1))
        & (grid_y.abs() <= 1.0 + _PIXEL_TOLERANCE * 2.0 / max(src_height - 1, 1))
    )  # (B, D, h, W)
    # Invalid points go far outside, so zero padding samples exactly zero there.
    outside = grid_x.new_full((), 2.0)
    if grid_x.requires_grad:
        grid = torch.stack(
            [torch.where(valid, grid_x, outside), torch.where(valid, grid_y, outside)], dim=-1
        )  # (B, D, h, W, 2)
    else:  # written straight into the interleaved grid: no stack copy
        grid = grid_x.new_empty(batch, num_depths, height, width, 2)
        torch.where(valid, grid_x, outside, out=grid[..., 0])
        torch.where(valid, grid_y, outside, out=grid[..., 1])
    warped = F.grid_sample(
        source_features,
        grid.view(batch, num_depths * height, width, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (B, C, D*h, W)
    return warped.view(batch, channels, num_depths, height, width), valid


def warp_features(
    source_features: torch.Tensor,
    reference_intrinsics: torch.Tensor,
    reference_extrinsics: torch.Tensor,
    source_intrinsics: torch.Tensor,
    source_extrinsics: torch.Tensor,
    depth_hypotheses: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`warp_source_to_reference` computed faster, zero where invalid.

    The per-pixel part of the projection is computed once (:func:`projection_terms`), so
    each hypothesis costs a few multiply-adds instead of a 3D point transform (about 3x
    faster at 1600x1152 on CPU). Conventions are exactly those of :func:`warp_source_to_reference` (pixel
    centres at integers, ``align_corners=True``, zero padding, the same validity rule);
    the one difference is that *all* invalid samples are zero here, including those
    within a pixel outside the image that the direct warp still interpolates, so invalid
    samples contribute nothing even unweighted. ``tests/test_models.py`` checks the two
    agree on valid samples.

    Args:
        source_features: (B, C, Hs, Ws).
        reference_intrinsics: (B, 3, 3) for the (H, W) reference grid.
        reference_extrinsics: (B, 4, 4) world-to-camera.
        source_intrinsics: (B, 3, 3) for the (Hs, Ws) source grid.
        source_extrinsics: (B, 4, 4) world-to-camera.
        depth_hypotheses: (B, D, H, W) reference-frame z (scene units).

    Returns:
        warped: (B, C, D, H, W) in the dtype of source_features.
        valid: (B, D, H, W) bool, in front of the source camera and inside its image.
    """
    _, _, src_height, src_width = source_features.shape
    _, _, height, width = depth_hypotheses.shape
    direction, offset = projection_terms(
        reference_intrinsics,
        reference_extrinsics,
        source_intrinsics,
        source_extrinsics,
        height,
        width,
        src_height,
        src_width,
        source_features.dtype,
    )
    return sample_source(source_features, direction, offset, depth_hypotheses)
