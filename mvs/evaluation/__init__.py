"""Evaluation of depth maps and point clouds.

Point clouds (DTU protocol; every distance in scene units, defaults are DTU's in mm):

* ``GroundTruth.from_synthetic_scene(scene_dir)`` / ``GroundTruth.from_dtu(dtu_root, scan)``
  / ``GroundTruth(points, obs_mask, plane)``: reference points, observation mask
  (:class:`ObservationMask`, DTU's voxelised ``ObsMask``) and ground plane
  (:mod:`mvs.evaluation.ground_truth`).
* ``EvalConfig(spacing=0.2, max_dist=20.0, thresholds=(0.5, 1.0, 2.0), ...)``.
* ``compare_point_clouds(points, gt, config) -> Comparison`` (``.result`` an
  :class:`EvalResult` plus per-point distances): thinning, masking, both distances,
  official and capped means, outlier fractions, precision/recall/F-score
  (:mod:`mvs.evaluation.pointcloud` documents the protocol).
* ``evaluate_point_cloud(prediction_ply, gt, out_dir, config=None, render_camera=None)
  -> EvalResult``: the same from a PLY, writing ``scores.json``, ``prediction_errors.ply``,
  ``gt_errors.ply`` and ``evaluation.png`` (:mod:`mvs.evaluation.report`).
* ``thin_points(points, spacing, seed) -> indices`` (:mod:`mvs.evaluation.thinning`).

Depth maps (:mod:`mvs.evaluation.depth`):

* ``depth_metrics(pred, gt, mask=None, thresholds=(1, 2, 4), error_thresholds=(2, 4, 8))
  -> DepthMetrics`` (numpy or torch; missing predictions count as failures).
* ``evaluate_depth_folder(pred_dir, scene) -> DepthEvaluation`` (per view and pooled).

Without ground truth (:mod:`mvs.evaluation.consistency`):

* ``silhouette_consistency(points, source_view, scene) -> SilhouetteResult``.
* ``cross_view_depth_consistency(depths, scene) -> CrossViewResult``.
"""

from mvs.evaluation.consistency import (
    CrossViewResult,
    SilhouetteResult,
    ViewSilhouette,
    cross_view_depth_consistency,
    silhouette_consistency,
)
from mvs.evaluation.depth import DepthEvaluation, DepthMetrics, depth_metrics, evaluate_depth_folder
from mvs.evaluation.ground_truth import GroundTruth, ObservationMask, read_plane_mat
from mvs.evaluation.pointcloud import (
    Comparison,
    EvalConfig,
    EvalResult,
    compare_point_clouds,
    nearest_distances,
)
from mvs.evaluation.report import default_render_camera, error_colors, evaluate_point_cloud
from mvs.evaluation.thinning import greedy_independent_set, thin_points

__all__ = [
    "Comparison",
    "CrossViewResult",
    "DepthEvaluation",
    "DepthMetrics",
    "EvalConfig",
    "EvalResult",
    "GroundTruth",
    "ObservationMask",
    "SilhouetteResult",
    "ViewSilhouette",
    "compare_point_clouds",
    "cross_view_depth_consistency",
    "default_render_camera",
    "depth_metrics",
    "error_colors",
    "evaluate_depth_folder",
    "evaluate_point_cloud",
    "greedy_independent_set",
    "nearest_distances",
    "read_plane_mat",
    "silhouette_consistency",
    "thin_points",
]
