"""Source-view selection for ``pair.txt`` by triangulation angle over shared 3D points.

The score of a view pair (i, j) is a sum over the 3D points both views see. For a point
``p`` seen from camera centres ``c_i`` and ``c_j`` the triangulation angle is

    theta = angle between (c_i - p) and (c_j - p), in degrees

and the point contributes

    exp(-(theta - theta0)^2 / (2 sigma^2)),  sigma = sigma_small if theta <= theta0
                                              sigma = sigma_large otherwise

with theta0 = 5 deg, sigma_small = 1, sigma_large = 10: the published MVSNet
(colmap2mvsnet) scoring. Pairs around 5 deg score highest; much smaller baselines are
penalised sharply (poor depth resolution), larger ones gently (appearance change).

Nothing here knows where the points come from: sparse SfM points and their tracks
(a COLMAP import) or surface samples of a synthetic scene work the same way. Without any
points, ``pairs_from_cameras`` samples them from the cameras' view frustums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mvs.io.pair import ViewPairs

if TYPE_CHECKING:
    from mvs.cameras import Camera

THETA0_DEG = 5.0
SIGMA_SMALL_DEG = 1.0
SIGMA_LARGE_DEG = 10.0


def angle_score(
    theta_deg: np.ndarray,
    theta0: float = THETA0_DEG,
    sigma_small: float = SIGMA_SMALL_DEG,
    sigma_large: float = SIGMA_LARGE_DEG,
) -> np.ndarray:
    """Per-point score of triangulation angles ``theta_deg`` (degrees), same shape."""
    theta = np.asarray(theta_deg, dtype=np.float64)
    sigma = np.where(theta <= theta0, sigma_small, sigma_large)
    return np.exp(-((theta - theta0) ** 2) / (2.0 * sigma**2))


def _check_inputs(
    points: np.ndarray, visibility: np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = np.asarray(points, dtype=np.float64)
    visibility = np.asarray(visibility, dtype=bool)
    centers = np.asarray(centers, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise ValueError(f"centers must be (V, 3), got {centers.shape}")
    if visibility.shape != (len(centers), len(points)):
        raise ValueError(
            f"visibility must be (V, N) = ({len(centers)}, {len(points)}), got {visibility.shape}"
        )
    return points, visibility, centers


def pair_scores(
    points: np.ndarray,
    visibility: np.ndarray,
    centers: np.ndarray,
    theta0: float = THETA0_DEG,
    sigma_small: float = SIGMA_SMALL_DEG,
    sigma_large: float = SIGMA_LARGE_DEG,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and shared-point counts of every view pair.

    Args:
        points: (N, 3) world points.
        visibility: (V, N) bool, ``visibility[v, n]``: view v sees point n.
        centers: (V, 3) camera centres, same units as ``points``.

    Returns:
        scores: (V, V) float64, symmetric, zero diagonal.
        shared: (V, V) int64, number of points both views see (diagonal: points seen).
    """
    points, visibility, centers = _check_inputs(points, visibility, centers)
    num_views = len(centers)
    scores = np.zeros((num_views, num_views))
    shared = visibility.astype(np.int64) @ visibility.T.astype(np.int64)
    for i in range(num_views - 1):
        seen = np.flatnonzero(visibility[i])
        if len(seen) == 0:
            continue
        others = np.arange(i + 1, num_views)
        others = others[shared[i, others] > 0]
        if len(others) == 0:
            continue
        p = points[seen]  # (n, 3)
        ray_i = centers[i] - p
        ray_i /= np.linalg.norm(ray_i, axis=1, keepdims=True)
        for j in others:
            both = visibility[j, seen]
            ray_j = centers[j] - p[both]
            ray_j /= np.linalg.norm(ray_j, axis=1, keepdims=True)
            cos = np.clip(np.einsum("nk,nk->n", ray_i[both], ray_j), -1.0, 1.0)
            theta = np.degrees(np.arccos(cos))
            value = angle_score(theta, theta0, sigma_small, sigma_large).sum()
            scores[i, j] = scores[j, i] = value
    return scores, shared


def select_views(
    points: np.ndarray,
    visibility: np.ndarray,
    centers: np.ndarray,
    num_sources: int = 10,
    view_ids: Sequence[int] | None = None,
    theta0: float = THETA0_DEG,
    sigma_small: float = SIGMA_SMALL_DEG,
    sigma_large: float = SIGMA_LARGE_DEG,
) -> ViewPairs:
    """The ``num_sources`` best source views of every view, best first.

    Args:
        points: (N, 3) world points.
        visibility: (V, N) bool, ``visibility[v, n]``: view v sees point n.
        centers: (V, 3) camera centres.
        num_sources: at most this many sources per view. A view sharing no point with the
            reference is never a source, so a view may get fewer.
        view_ids: the ids to write for views 0..V-1 (default: 0..V-1).

    Returns:
        ``{ref_id: [(src_id, score), ...]}`` for every view, in view order, sources sorted
        by decreasing score (ties: lower index first), ready for ``mvs.io.write_pair``.
    """
    scores, shared = pair_scores(points, visibility, centers, theta0, sigma_small, sigma_large)
    num_views = len(scores)
    ids = list(range(num_views)) if view_ids is None else [int(v) for v in view_ids]
    if len(ids) != num_views:
        raise ValueError(f"view_ids has {len(ids)} entries for {num_views} views")
    pairs: ViewPairs = {}
    for ref in range(num_views):
        candidates = [s for s in range(num_views) if s != ref and shared[ref, s] > 0]
        candidates.sort(key=lambda s: (-scores[ref, s], s))
        pairs[ids[ref]] = [(ids[s], float(scores[ref, s])) for s in candidates[:num_sources]]
    return pairs


def frustum_samples(
    cameras: Sequence[Camera], grid: tuple[int, int] = (16, 12), fractions: Sequence[float] = (0.25, 0.5, 0.75)
) -> tuple[np.ndarray, np.ndarray]:
    """World points filling every camera's view frustum, and which cameras see each.

    Each camera contributes a ``grid`` = (columns, rows) of pixel centres back-projected
    to depths ``depth_min + f * (depth_max - depth_min)`` for each ``f`` in ``fractions``.
    A camera sees a point when it lies in front of it within its depth range and projects
    inside its image.

    Returns:
        points: (N, 3) float64 world points, scene units, N = V * columns * rows * len(fractions).
        visibility: (V, N) bool, ``visibility[v, n]``: camera v sees point n (its own
            samples always).
    """
    columns, rows = grid
    points = []
    for camera in cameras:
        us = (np.arange(columns) + 0.5) * camera.width / columns
        vs = (np.arange(rows) + 0.5) * camera.height / rows
        pixels = np.stack(np.meshgrid(us, vs), -1).reshape(-1, 2)
        rays = np.concatenate([pixels, np.ones((len(pixels), 1))], 1) @ np.linalg.inv(camera.intrinsics).T
        for fraction in fractions:
            depth = camera.depth_min + fraction * (camera.depth_max - camera.depth_min)
            in_camera = rays * depth  # rays have z = 1 (K's last row is 0 0 1), so z = depth
            points.append((in_camera - camera.translation) @ camera.rotation)  # R^T (x - t)
    world = np.concatenate(points) if points else np.zeros((0, 3))
    visibility = np.zeros((len(cameras), len(world)), bool)
    for index, camera in enumerate(cameras):
        x = world @ camera.rotation.T + camera.translation
        z = x[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (x @ camera.intrinsics.T)[:, :2] / z[:, None]
        visibility[index] = (
            (z >= camera.depth_min) & (z <= camera.depth_max)
            & (uv[:, 0] >= -0.5) & (uv[:, 0] < camera.width - 0.5)
            & (uv[:, 1] >= -0.5) & (uv[:, 1] < camera.height - 0.5)
        )
    return world, visibility


def pairs_from_cameras(
    cameras: Sequence[Camera],
    num_sources: int = 10,
    view_ids: Sequence[int] | None = None,
    grid: tuple[int, int] = (16, 12),
) -> ViewPairs:
    """Source views of every view from the cameras alone, for a scene without pair.txt.

    The points the views share are samples of their frustums (``frustum_samples``); the
    triangulation-angle score of ``select_views`` then ranks the sources as it does for SfM
    points. Overlapping frustums stand in for a shared surface, so prefer real points (SfM
    tracks, a known surface) when there are any.

    Args:
        cameras: V calibrated cameras with their depth ranges (``depth_min``/``depth_max``
            in scene units bound the samples).
        num_sources: at most this many sources per view, best first.
        view_ids: the ids of the V views (default: 0..V-1).
        grid: (columns, rows) of pixels sampled per camera and depth.

    Returns:
        ``{view_id: [(source_id, score), ...]}`` as ``select_views`` gives it; a view is
        never its own source, and a view whose frustum overlaps no other gets none.
    """
    points, visibility = frustum_samples(cameras, grid)
    centers = np.array([camera.center for camera in cameras], dtype=np.float64).reshape(-1, 3)
    return select_views(points, visibility, centers, num_sources, view_ids=view_ids)
