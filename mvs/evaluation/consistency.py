"""Checks that need no ground-truth geometry: silhouettes and cross-view depth agreement.

* :func:`silhouette_consistency`: fused points against object masks (e.g. DTU scan 24's
  silhouettes). Points whose pixel lies inside their own reference view's mask are the
  candidates; a candidate is consistent when it projects inside the mask of every other
  view whose image it falls in (in front of the camera, within the image). A good
  reconstruction scores >= 0.98. Masks are dilated by ``tolerance_px`` pixels before the
  test in the other views, to forgive silhouette edges drawn a pixel off.
* :func:`cross_view_depth_consistency`: the share of depth pixels that survive the round
  trip into at least ``min_consistent_views`` neighbour views, with fusion's own test
  (:func:`mvs.fusion.consistency_with_source`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from mvs.cameras import Camera
from mvs.data.scene import Scene
from mvs.evaluation._projection import pixel_index
from mvs.evaluation.pointcloud import json_safe
from mvs.fusion import consistency_with_source


@dataclass
class ViewSilhouette:
    in_frame: int  # candidate points (from other views) that fall in this view's image
    inside: int  # of those, inside this view's mask
    fraction: float


@dataclass
class SilhouetteResult:
    fraction: float  # consistent / candidates
    candidates: int  # points inside their own reference view's mask
    total_points: int
    per_view: dict[int, ViewSilhouette]  # how other views' points fare in each view's mask
    per_source_view: dict[int, float]  # consistent fraction of the candidates from each view

    def to_dict(self) -> dict:
        return json_safe({
            "fraction": self.fraction,
            "candidates": self.candidates,
            "total_points": self.total_points,
            "per_view": {v: asdict(s) for v, s in self.per_view.items()},
            "per_source_view": self.per_source_view,
        })


def _view_mask(scene: Scene, view: int, tolerance_px: int) -> tuple[np.ndarray, np.ndarray, Camera]:
    """The view's mask, the mask dilated by ``tolerance_px``, and the camera at their size."""
    mask = scene.mask(view)
    camera = scene.views[view].camera
    if mask.shape != (camera.height, camera.width):
        camera = camera.resized(mask.shape[1], mask.shape[0])
    dilated = mask
    if tolerance_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance_px + 1,) * 2)
        dilated = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return mask, dilated, camera


def silhouette_consistency(points: np.ndarray, source_view: np.ndarray, scene: Scene,
                           tolerance_px: int = 1) -> SilhouetteResult:
    """Share of in-silhouette fused points that stay inside every other view's silhouette.

    Args:
        points: (N, 3) fused world points.
        source_view: (N,) id of the reference view each point came from (``FusedCloud``).
        scene: views with masks (``scene.mask(view)``).
        tolerance_px: dilation (pixels at the mask's resolution) of the masks of the other
            views; a point's own view uses its mask as is.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    source_view = np.asarray(source_view).reshape(-1)
    if len(source_view) != len(points):
        raise ValueError(f"source_view has {len(source_view)} entries for {len(points)} points")
    views = [v for v in scene.view_ids if scene.views[v].mask_path is not None]
    masks = {v: _view_mask(scene, v, tolerance_px) for v in views}

    # Candidates: points inside their own view's (undilated) silhouette.
    candidate = np.zeros(len(points), bool)
    for v in np.unique(source_view):
        if int(v) not in masks:
            continue
        index = np.flatnonzero(source_view == v)
        mask, _, camera = masks[int(v)]
        col, row, in_frame = pixel_index(points[index], camera)
        candidate[index] = in_frame & mask[row, col]
    cand_index = np.flatnonzero(candidate)
    cand_points, cand_source = points[cand_index], source_view[cand_index]

    consistent = np.ones(len(cand_index), bool)
    per_view = {}
    for v in views:
        _, mask, camera = masks[v]
        col, row, in_frame = pixel_index(cand_points, camera)
        in_frame &= cand_source != v
        inside = in_frame & mask[row, col]
        consistent &= ~in_frame | inside
        seen = int(in_frame.sum())
        per_view[v] = ViewSilhouette(seen, int(inside.sum()), float(inside.sum() / seen) if seen else float("nan"))
    per_source = {int(v): float(consistent[cand_source == v].mean()) for v in np.unique(cand_source)}
    fraction = float(consistent.mean()) if len(consistent) else float("nan")
    return SilhouetteResult(fraction, int(len(cand_index)), int(len(points)), per_view, per_source)


@dataclass
class CrossViewResult:
    fraction: float  # consistent pixels / pixels with depth, all views pooled
    pixels_with_depth: int
    consistent_pixels: int
    per_view: dict[int, dict]  # view -> {"pixels_with_depth", "consistent", "fraction", "neighbours"}

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


def cross_view_depth_consistency(depths: Mapping[int, np.ndarray], scene: Scene, num_neighbours: int = 4,
                                 reprojection_error: float = 1.0, relative_depth_error: float = 0.01,
                                 min_consistent_views: int = 2, use_masks: bool = False,
                                 device: str | torch.device = "cpu") -> CrossViewResult:
    """Share of depth pixels consistent with at least ``min_consistent_views`` neighbours.

    Args:
        depths: view id -> (h, w) depth (0 = none), any resolution (cameras are resized to it).
        scene: cameras and view selection; the neighbours of a view are its first
            ``num_neighbours`` source views (``scene.source_views``) that have a depth map.
        reprojection_error: round-trip pixel error limit, at the depth maps' resolution.
        relative_depth_error: |z_back - z| / z limit.
        use_masks: count only pixels inside the view's mask (resized, nearest).
    """
    dtype = torch.float32

    def tensors(view: int):
        depth = np.asarray(depths[view], dtype=np.float32)
        camera = scene.views[view].camera.resized(depth.shape[1], depth.shape[0])
        return (torch.as_tensor(depth, device=device), camera.intrinsics_tensor(device, dtype),
                camera.extrinsics_tensor(device, dtype))

    per_view, total, total_ok = {}, 0, 0
    for ref in [v for v in scene.view_ids if v in depths]:
        ref_depth, ref_K, ref_E = tensors(ref)
        counted = ref_depth > 0
        if use_masks and scene.views[ref].mask_path is not None:
            mask = scene.mask(ref).astype(np.uint8)
            if mask.shape != tuple(ref_depth.shape):
                mask = cv2.resize(mask, (ref_depth.shape[1], ref_depth.shape[0]),
                                  interpolation=cv2.INTER_NEAREST)
            counted &= torch.as_tensor(mask > 0, device=device)
        neighbours = [s for s in scene.source_views(ref) if s in depths][:num_neighbours]
        count = torch.zeros_like(ref_depth)
        for src in neighbours:
            reprojection, relative, _ = consistency_with_source(ref_depth, ref_K, ref_E, *tensors(src))
            count += (reprojection < reprojection_error) & (relative < relative_depth_error)
        ok = counted & (count >= min_consistent_views)
        n, k = int(counted.sum()), int(ok.sum())
        per_view[ref] = {"pixels_with_depth": n, "consistent": k,
                         "fraction": k / n if n else float("nan"), "neighbours": neighbours}
        total, total_ok = total + n, total_ok + k
    return CrossViewResult(total_ok / total if total else float("nan"), total, total_ok, per_view)
