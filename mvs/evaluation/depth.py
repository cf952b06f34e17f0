"""Depth-map scores against ground-truth depth maps.

Pixel conventions of :func:`depth_metrics`:

* **valid** pixels are those where the GT is finite and > 0 (and ``mask`` is set); every
  score is over valid pixels only.
* a valid pixel is **predicted** where the prediction is finite and > 0. Missing
  predictions are left out of the mean errors (``mae``, ``rmse``) but count as failures
  in every fraction: never "within t", always "error above t". ``coverage`` is the share
  of valid pixels that are predicted.
* ``within[t]``: share of valid pixels with a prediction and |pred - gt| < t (defaults
  1, 2, 4 scene units); ``error_rate[t]``: share with |pred - gt| > t or no prediction
  (defaults 2, 4, 8: MVSNet's "thres2mm/4mm/8mm error" on DTU, in mm).
* a GT (and mask) of another resolution than the prediction is resized to the
  prediction's resolution with nearest-neighbour sampling (no blending of depths across
  edges); the prediction is never resampled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mvs.data.scene import Scene
from mvs.errors import MVSInputError
from mvs.io import read_pfm


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def _resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass
class DepthMetrics:
    """Depth errors as sums and counts, so that views can be pooled (:meth:`combine`)."""

    valid_pixels: int
    predicted_pixels: int
    abs_error_sum: float
    squared_error_sum: float
    within_counts: dict[float, int] = field(default_factory=dict)
    error_counts: dict[float, int] = field(default_factory=dict)

    @property
    def mae(self) -> float:
        """Mean |pred - gt| over predicted valid pixels, scene units."""
        return self.abs_error_sum / self.predicted_pixels if self.predicted_pixels else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.squared_error_sum / self.predicted_pixels) if self.predicted_pixels else math.nan

    @property
    def coverage(self) -> float:
        return self.predicted_pixels / self.valid_pixels if self.valid_pixels else math.nan

    @property
    def within(self) -> dict[float, float]:
        """Threshold -> share of valid pixels predicted with |error| < threshold."""
        return {t: (c / self.valid_pixels if self.valid_pixels else math.nan) for t, c in self.within_counts.items()}

    @property
    def error_rate(self) -> dict[float, float]:
        """Threshold -> share of valid pixels with |error| > threshold or no prediction."""
        return {t: (c / self.valid_pixels if self.valid_pixels else math.nan) for t, c in self.error_counts.items()}

    @classmethod
    def combine(cls, items: Iterable[DepthMetrics]) -> DepthMetrics:
        """Pool several maps' pixels (a pixel-weighted average of their scores)."""
        items = list(items)
        total = cls(0, 0, 0.0, 0.0, {}, {})
        for m in items:
            total.valid_pixels += m.valid_pixels
            total.predicted_pixels += m.predicted_pixels
            total.abs_error_sum += m.abs_error_sum
            total.squared_error_sum += m.squared_error_sum
            for t, c in m.within_counts.items():
                total.within_counts[t] = total.within_counts.get(t, 0) + c
            for t, c in m.error_counts.items():
                total.error_counts[t] = total.error_counts.get(t, 0) + c
        return total

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "mae": clean(self.mae),
            "rmse": clean(self.rmse),
            "coverage": clean(self.coverage),
            "within": {f"{t:g}": clean(v) for t, v in self.within.items()},
            "error_rate": {f"{t:g}": clean(v) for t, v in self.error_rate.items()},
            "valid_pixels": self.valid_pixels,
            "predicted_pixels": self.predicted_pixels,
        }


def depth_metrics(pred, gt, mask=None, thresholds: Sequence[float] = (1, 2, 4),
                  error_thresholds: Sequence[float] = (2, 4, 8)) -> DepthMetrics:
    """Score a predicted depth map against GT (numpy arrays or torch tensors).

    Args:
        pred: (H, W) predicted depth, scene units (0, negative or non-finite = none).
        gt: (Hg, Wg) GT depth (0 = unknown); resized (nearest) to (H, W) if it differs.
        mask: optional (Hg, Wg) or (H, W) bool; only pixels inside it are scored.
        thresholds: distances for ``within`` (share with |error| < t).
        error_thresholds: distances for ``error_rate`` (share with |error| > t or missing).

    See the module docstring for how missing predictions count.
    """
    pred, gt = _to_numpy(pred), _to_numpy(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"depth maps must be 2-D, got {pred.shape} and {gt.shape}")
    if gt.shape != pred.shape:
        gt = _resize_nearest(gt, pred.shape)
    valid = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        mask = _to_numpy(mask) > 0
        if mask.shape != pred.shape:
            mask = _resize_nearest(mask.astype(np.uint8), pred.shape) > 0
        valid &= mask
    predicted = valid & np.isfinite(pred) & (pred > 0)
    error = np.abs(pred[predicted] - gt[predicted])
    return DepthMetrics(
        valid_pixels=int(valid.sum()),
        predicted_pixels=int(predicted.sum()),
        abs_error_sum=float(error.sum()),
        squared_error_sum=float(np.square(error).sum()),
        within_counts={float(t): int((error < t).sum()) for t in thresholds},
        error_counts={float(t): int((error > t).sum()) + int(valid.sum() - predicted.sum())
                      for t in error_thresholds},
    )


@dataclass
class DepthEvaluation:
    """Per-view metrics of a folder of predictions and their pixel-pooled total."""

    per_view: dict[int, DepthMetrics]
    total: DepthMetrics
    missing_views: list[int]  # views with GT depth but no prediction

    @property
    def mean_view_mae(self) -> float:
        """Unweighted mean of the per-view MAEs (each view counts once)."""
        values = [m.mae for m in self.per_view.values() if not math.isnan(m.mae)]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict:
        return {
            "total": self.total.to_dict(),
            "mean_view_mae": None if math.isnan(self.mean_view_mae) else self.mean_view_mae,
            "views": {str(v): m.to_dict() for v, m in self.per_view.items()},
            "missing_views": self.missing_views,
        }


def evaluate_depth_folder(pred_dir: str | Path, scene: Scene, thresholds: Sequence[float] = (1, 2, 4),
                          error_thresholds: Sequence[float] = (2, 4, 8),
                          use_masks: bool = False) -> DepthEvaluation:
    """Score ``pred_dir/{view:08d}.pfm`` against the scene's GT depth maps.

    Args:
        pred_dir: folder of predicted PFMs (``mvs`` reconstructions write them in ``depths/``;
            that subfolder is used when ``pred_dir`` has it).
        scene: a scene with GT depth (``scene.depth(view)``).
        use_masks: also restrict to the scene's masks where views have them.
    """
    pred_dir = Path(pred_dir)
    if (pred_dir / "depths").is_dir():
        pred_dir = pred_dir / "depths"
    if not pred_dir.is_dir():
        raise MVSInputError("prediction folder not found", pred_dir)
    per_view, missing = {}, []
    for view in scene.view_ids:
        if scene.views[view].depth_path is None:
            continue
        path = pred_dir / f"{view:08d}.pfm"
        if not path.is_file():
            missing.append(view)
            continue
        mask = scene.mask(view) if use_masks and scene.views[view].mask_path is not None else None
        per_view[view] = depth_metrics(read_pfm(path), scene.depth(view), mask, thresholds, error_thresholds)
    if not per_view:
        raise MVSInputError("no predicted depth map matches a view with ground truth "
                            "(expected files like 00000000.pfm)", pred_dir)
    return DepthEvaluation(per_view, DepthMetrics.combine(per_view.values()), missing)
