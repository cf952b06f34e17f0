"""Depth-map fusion: confidence filter, cross-view geometric consistency, fused coloured cloud.

For each reference view, every pixel's 3D point is projected into each source view, the
source depth is read there and its point projected back into the reference. A pixel is
consistent with that source when the round trip lands within ``reprojection_error``
pixels and within ``relative_depth_error`` of the reference depth. Pixels consistent with
at least ``min_consistent_views`` sources are kept, their point being the mean of the
reference point and the consistent sources' points. Sources are processed one at a time,
so memory stays at a few copies of one depth map whatever the number of views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_pixel_coordinates
from tqdm import tqdm

from mvs.data.scene import Scene
from mvs.geometry import (
    backproject_depth,
    pixel_grid,
    project_points,
    unproject_pixels,
)


@dataclass
class FusionConfig:
    confidence_threshold: float = 0.3  # photometric filter; ignored when no confidence maps
    reprojection_error: float = 1.0  # pixels, at the depth maps' resolution
    relative_depth_error: float = 0.01  # |d_reprojected - d| / d
    min_consistent_views: int = 3
    num_source_views: int = 10


@dataclass
class ViewFusionStats:
    view: int
    pixels: int
    with_depth: int
    kept_by_confidence: int
    kept_by_consistency: int


@dataclass
class FusedCloud:
    points: np.ndarray  # (N, 3) world coordinates, scene units
    colors: np.ndarray  # (N, 3) uint8 RGB
    source_view: np.ndarray  # (N,) id of the reference view each point came from
    stats: list[ViewFusionStats]

    def stats_dict(self) -> dict:
        return {
            "points": int(len(self.points)),
            "views": [asdict(s) for s in self.stats],
        }


def consistency_with_source(
    ref_depth: torch.Tensor,
    ref_K: torch.Tensor,
    ref_E: torch.Tensor,
    src_depth: torch.Tensor,
    src_K: torch.Tensor,
    src_E: torch.Tensor,
    reference_points: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-trip check of a reference depth map against one source depth map.

    Args:
        ref_depth: (H, W) reference depth (0 = none). ref_K (3, 3), ref_E (4, 4).
        src_depth: (Hs, Ws) source depth (0 = none). src_K (3, 3), src_E (4, 4).
        reference_points: (H, W, 3) world points of ``ref_depth`` if the caller already
            has them (checking one reference against many sources), else computed here.

    Returns:
        reprojection_error: (H, W) pixels between a pixel and its round trip (inf if none).
        relative_depth_error: (H, W) |z_back - z| / z (inf if none).
        source_points: (H, W, 3) world points of the source depth met on the way.
    """
    height, width = ref_depth.shape
    src_height, src_width = src_depth.shape
    if reference_points is None:
        reference_points = backproject_depth(ref_depth[None], ref_K[None], ref_E[None])[0]
    world = reference_points.reshape(1, -1, 3)
    pixels, z = project_points(world, src_K[None], src_E[None])  # (1, HW, 2), (1, HW)
    grid = normalize_pixel_coordinates(pixels, src_height, src_width)
    sampled = F.grid_sample(
        src_depth[None, None], grid[:, None], mode="bilinear", align_corners=True
    )[0, 0, 0]  # (HW,)
    # A bilinear read is trusted only where all four taps hold depth: near an image border or a
    # hole it would blend real depth with zeros.
    support = F.grid_sample(
        (src_depth > 0).to(src_depth.dtype)[None, None], grid[:, None], mode="bilinear",
        padding_mode="zeros", align_corners=True,
    )[0, 0, 0]
    ok = (z[0] > 0) & (support > 1.0 - 1e-4) & (sampled > 0)
    source_points = unproject_pixels(pixels, sampled[None], src_K[None], src_E[None])  # (1, HW, 3)
    back_pixels, back_z = project_points(source_points, ref_K[None], ref_E[None])
    grid_ref = pixel_grid(height, width, ref_depth.device, ref_depth.dtype).reshape(-1, 2)
    reprojection = torch.linalg.norm(back_pixels[0] - grid_ref, dim=-1)
    relative = (back_z[0] - ref_depth.reshape(-1)).abs() / ref_depth.reshape(-1).clamp_min(1e-12)
    ok = ok & (ref_depth.reshape(-1) > 0) & (back_z[0] > 0)
    inf = torch.full_like(reprojection, float("inf"))
    return (
        torch.where(ok, reprojection, inf).reshape(height, width),
        torch.where(ok, relative, inf).reshape(height, width),
        source_points[0].reshape(height, width, 3),
    )


def fuse_depth_maps(
    scene: Scene,
    depths: Mapping[int, np.ndarray],
    confidences: Mapping[int, np.ndarray] | None = None,
    config: FusionConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FusedCloud:
    """Fuse per-view depth maps of ``scene`` into one coloured point cloud.

    Args:
        scene: cameras, images and view selection.
        depths: view id -> (h, w) depth (0 = none), at any resolution (cameras are rescaled).
        confidences: view id -> (h, w) confidence in [0, 1], or None.
        config: thresholds.
        device: where the arithmetic runs (a GPU when present).
    """
    config = config or FusionConfig()
    dtype = torch.float32
    views = [v for v in scene.view_ids if v in depths]

    def tensors(view_id: int):
        depth = np.asarray(depths[view_id], dtype=np.float32)
        camera = scene.views[view_id].camera.resized(depth.shape[1], depth.shape[0])
        return (
            torch.as_tensor(depth, device=device),
            camera.intrinsics_tensor(device, dtype),
            camera.extrinsics_tensor(device, dtype),
        )

    all_points, all_colors, all_views, stats = [], [], [], []
    for ref in tqdm(views, desc="fusing", unit="view", disable=not progress):
        ref_depth, ref_K, ref_E = tensors(ref)
        height, width = ref_depth.shape
        has_depth = ref_depth > 0
        keep = has_depth.clone()
        if confidences is not None and ref in confidences:
            confidence = torch.as_tensor(np.asarray(confidences[ref], np.float32), device=device)
            keep &= confidence >= config.confidence_threshold
        kept_by_confidence = int(keep.sum())
        ref_depth = torch.where(keep, ref_depth, torch.zeros_like(ref_depth))

        count = torch.zeros((height, width), device=device, dtype=dtype)
        ref_points = backproject_depth(ref_depth[None], ref_K[None], ref_E[None])[0]  # (H, W, 3)
        point_sum = ref_points.clone()
        sources = [s for s in scene.source_views(ref) if s in depths][: config.num_source_views]
        for src in sources:
            src_depth, src_K, src_E = tensors(src)
            reprojection, relative, src_points = consistency_with_source(
                ref_depth, ref_K, ref_E, src_depth, src_K, src_E, ref_points
            )
            consistent = (reprojection < config.reprojection_error) & (
                relative < config.relative_depth_error
            )
            count += consistent
            point_sum += torch.where(consistent[..., None], src_points, torch.zeros_like(src_points))
        keep &= count >= config.min_consistent_views
        points = (point_sum / (count + 1)[..., None])[keep]

        image = scene.image(ref)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        colors = image[keep.cpu().numpy()]
        all_points.append(points.cpu().numpy().astype(np.float64))
        all_colors.append(colors)
        all_views.append(np.full(len(colors), ref, np.int32))
        stats.append(
            ViewFusionStats(ref, height * width, int(has_depth.sum()), kept_by_confidence, int(keep.sum()))
        )
    if not all_points:
        return FusedCloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32), stats)
    return FusedCloud(
        np.concatenate(all_points), np.concatenate(all_colors), np.concatenate(all_views), stats
    )
