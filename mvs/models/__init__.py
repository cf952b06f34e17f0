"""The cascade cost-volume network: features, hypotheses, cost volume, 3D U-Net, depth head."""

from mvs.models.cascade import CascadeMVSNet, scale_intrinsics
from mvs.models.config import ModelConfig
from mvs.models.cost_volume import CostVolume, VisibilityNet, group_correlation
from mvs.models.depth_head import depth_regression, window_confidence
from mvs.models.features import FeaturePyramid, standardize_images
from mvs.models.hypotheses import base_interval, initial_hypotheses, refined_hypotheses
from mvs.models.loss import cascade_loss, depth_metrics, downsample_nearest
from mvs.models.regularization import CostRegularization

__all__ = [
    "CascadeMVSNet",
    "CostRegularization",
    "CostVolume",
    "FeaturePyramid",
    "ModelConfig",
    "VisibilityNet",
    "base_interval",
    "cascade_loss",
    "depth_metrics",
    "depth_regression",
    "downsample_nearest",
    "group_correlation",
    "initial_hypotheses",
    "refined_hypotheses",
    "scale_intrinsics",
    "standardize_images",
    "window_confidence",
]
