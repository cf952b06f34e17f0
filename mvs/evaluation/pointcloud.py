"""Point-cloud scores, DTU protocol: accuracy, completeness, overall, precision/recall/F-score.

Steps of :func:`compare_point_clouds` (defaults are DTU's, all in scene units):

1. Non-finite prediction points are dropped; the rest is thinned to ``spacing`` (0.2 mm;
   :func:`mvs.evaluation.thinning.thin_points`).
2. Accuracy set: thinned points inside the GT observation mask.
3. Distances with ``scipy.spatial.cKDTree(...).query(workers=-1)``: accuracy set -> GT
   points (accuracy); GT points above the ground plane -> all thinned points (completeness;
   like the official script, completeness looks at the whole thinned prediction, not only
   the masked part). Distances are searched up to ``max_dist``; farther ones are inf.
4. Distances >= ``max_dist`` (20 mm) are outliers, reported two ways:
   * ``accuracy`` / ``completeness`` / ``overall``: the official numbers, the mean of the
     distances below ``max_dist`` only (outliers are left out of the mean);
   * ``*_capped``: the mean with every distance capped at ``max_dist`` (outliers count as
     ``max_dist``), so a cloud cannot improve by adding far-away junk or leaving holes;
   * ``*_outlier_fraction``: the share of each side beyond ``max_dist``.
   ``overall = (accuracy + completeness) / 2`` (likewise for the capped variant).
5. For each threshold t (default 0.5, 1, 2): precision = share of the accuracy set closer
   than t to GT, recall = share of above-plane GT points closer than t to the thinned
   prediction, F-score = 2PR / (P + R) (Tanks and Temples).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from mvs.evaluation.ground_truth import GroundTruth
from mvs.evaluation.thinning import spatial_order, thin_points


@dataclass
class EvalConfig:
    """Point-cloud evaluation settings; distances in scene units (defaults: DTU, mm).

    Attributes:
        spacing: thinning distance for the prediction (0 disables thinning).
        max_dist: outlier threshold; farther distances are outliers.
        thresholds: distances at which precision, recall and F-score are reported.
        seed: seed of the thinning order.
        color_max: top of the colour scale of the error PLYs and renderings
            (None: the largest of ``thresholds``).
        write_plys, write_png: outputs of :func:`mvs.evaluation.evaluate_point_cloud`.
        point_size: splat size of the renderings, pixels.
    """

    spacing: float = 0.2
    max_dist: float = 20.0
    thresholds: tuple[float, ...] = (0.5, 1.0, 2.0)
    seed: int = 0
    color_max: float | None = None
    write_plys: bool = True
    write_png: bool = True
    point_size: int = 2

    def __post_init__(self) -> None:
        self.thresholds = tuple(float(t) for t in self.thresholds)
        if self.max_dist <= 0:
            raise ValueError(f"max_dist must be > 0, got {self.max_dist}")
        if any(t <= 0 for t in self.thresholds):
            raise ValueError(f"thresholds must be > 0, got {self.thresholds}")

    @property
    def color_range(self) -> float:
        if self.color_max is not None:
            return float(self.color_max)
        return max(self.thresholds) if self.thresholds else self.max_dist


@dataclass
class EvalResult:
    """Scores of one predicted cloud against ground truth (distances in scene units).

    ``accuracy``/``completeness``/``overall`` are the official DTU means (distances below
    ``max_dist`` only); ``*_capped`` cap distances at ``max_dist`` instead; medians are
    over all distances (outliers included). NaN where a side has no points.
    """

    accuracy: float
    completeness: float
    overall: float
    accuracy_capped: float
    completeness_capped: float
    overall_capped: float
    accuracy_median: float
    completeness_median: float
    accuracy_outlier_fraction: float
    completeness_outlier_fraction: float
    precision: dict[float, float]
    recall: dict[float, float]
    fscore: dict[float, float]
    prediction_points: int  # finite input points
    thinned_points: int  # after thinning (the completeness side)
    evaluated_points: int  # thinned and inside the observation mask (the accuracy side)
    gt_points: int
    gt_points_above_plane: int  # the completeness side
    max_dist: float
    spacing: float
    timings: dict[str, float] = field(default_factory=dict)
    ground_truth: str = ""

    def to_dict(self) -> dict:
        """JSON-ready: threshold keys as strings, NaN as None."""
        out = asdict(self)
        for name in ("precision", "recall", "fscore"):
            out[name] = {f"{t:g}": v for t, v in getattr(self, name).items()}
        return json_safe(out)

    def summary(self) -> str:
        lines = [
            f"accuracy {self.accuracy:.4f}  completeness {self.completeness:.4f}  "
            f"overall {self.overall:.4f}  (official: mean of distances < {self.max_dist:g})",
            f"capped at {self.max_dist:g}: accuracy {self.accuracy_capped:.4f}  "
            f"completeness {self.completeness_capped:.4f}  overall {self.overall_capped:.4f}",
            f"outliers: {100 * self.accuracy_outlier_fraction:.2f}% of prediction, "
            f"{100 * self.completeness_outlier_fraction:.2f}% of GT",
        ]
        for t in self.fscore:
            lines.append(f"@{t:g}: precision {self.precision[t]:.4f}  recall {self.recall[t]:.4f}  "
                         f"F-score {self.fscore[t]:.4f}")
        lines.append(f"points: {self.prediction_points} predicted, {self.thinned_points} thinned, "
                     f"{self.evaluated_points} in mask; GT {self.gt_points} "
                     f"({self.gt_points_above_plane} above plane)")
        return "\n".join(lines)


def json_safe(value):
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class Comparison:
    """Per-point detail behind an :class:`EvalResult` (for coloured outputs and plots).

    Distances are inf beyond ``max_dist``; ``accuracy_distance`` is NaN outside the mask,
    ``completeness_distance`` NaN below the plane.
    """

    result: EvalResult
    thinned_index: np.ndarray  # (M,) indices into the input prediction points
    in_mask: np.ndarray  # (M,) bool
    accuracy_distance: np.ndarray  # (M,)
    completeness_distance: np.ndarray  # (N_gt,)


def nearest_distances(reference: np.ndarray, queries: np.ndarray, max_dist: float) -> np.ndarray:
    """Distance of each query to its nearest reference point; inf if none within ``max_dist``.

    Both sides go through the KD-tree in Morton order (much faster on unordered clouds).
    """
    queries = np.asarray(queries, dtype=np.float64).reshape(-1, 3)
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
    if len(reference) == 0 or len(queries) == 0:
        return np.full(len(queries), np.inf)
    tree = cKDTree(reference[spatial_order(reference)])
    order = spatial_order(queries)
    # Search a hair beyond max_dist so a distance of exactly max_dist comes back finite.
    bound = float(np.nextafter(max_dist, np.inf)) * (1 + 1e-12)
    distance = np.empty(len(queries))
    distance[order], _ = tree.query(queries[order], k=1, distance_upper_bound=bound, workers=-1)
    return distance


def _side_stats(distance: np.ndarray, max_dist: float) -> tuple[float, float, float, float]:
    """(official mean, capped mean, median, outlier fraction) of one side's distances."""
    if len(distance) == 0:
        return (math.nan,) * 4
    inlier = distance < max_dist
    official = float(distance[inlier].mean()) if inlier.any() else math.nan
    capped = float(np.minimum(distance, max_dist).mean())
    return official, capped, float(np.median(distance)), float(1.0 - inlier.mean())


def _fraction_below(distance: np.ndarray, threshold: float) -> float:
    return float((distance < threshold).mean()) if len(distance) else math.nan


def _fscore(precision: float, recall: float) -> float:
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def compare_point_clouds(prediction: np.ndarray, gt: GroundTruth, config: EvalConfig | None = None) -> Comparison:
    """Score (N, 3) predicted points against ``gt`` with the DTU protocol (module docstring)."""
    config = config or EvalConfig()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    prediction = np.asarray(prediction, dtype=np.float64).reshape(-1, 3)
    finite = np.flatnonzero(np.all(np.isfinite(prediction), axis=1))
    thinned_index = finite[thin_points(prediction[finite], config.spacing, config.seed)]
    thinned = prediction[thinned_index]
    lap("thin")
    in_mask = gt.obs_mask.contains(thinned) if gt.obs_mask is not None else np.ones(len(thinned), bool)
    above = gt.above_plane()
    lap("mask")
    accuracy_side = nearest_distances(gt.points, thinned[in_mask], config.max_dist)
    lap("accuracy distances")
    completeness_side = nearest_distances(thinned, gt.points[above], config.max_dist)
    lap("completeness distances")

    acc, acc_capped, acc_median, acc_out = _side_stats(accuracy_side, config.max_dist)
    comp, comp_capped, comp_median, comp_out = _side_stats(completeness_side, config.max_dist)
    precision, recall, fscore = {}, {}, {}
    for t in config.thresholds:
        p, r = _fraction_below(accuracy_side, t), _fraction_below(completeness_side, t)
        precision[t], recall[t] = p, r
        fscore[t] = _fscore(p, r)
    lap("scores")
    result = EvalResult(
        accuracy=acc,
        completeness=comp,
        overall=(acc + comp) / 2,
        accuracy_capped=acc_capped,
        completeness_capped=comp_capped,
        overall_capped=(acc_capped + comp_capped) / 2,
        accuracy_median=acc_median,
        completeness_median=comp_median,
        accuracy_outlier_fraction=acc_out,
        completeness_outlier_fraction=comp_out,
        precision=precision,
        recall=recall,
        fscore=fscore,
        prediction_points=int(len(finite)),
        thinned_points=int(len(thinned)),
        evaluated_points=int(in_mask.sum()),
        gt_points=int(len(gt.points)),
        gt_points_above_plane=int(above.sum()),
        max_dist=float(config.max_dist),
        spacing=float(config.spacing),
        timings=timings,
        ground_truth=gt.name,
    )
    accuracy_distance = np.full(len(thinned), np.nan)
    accuracy_distance[in_mask] = accuracy_side
    completeness_distance = np.full(len(gt.points), np.nan)
    completeness_distance[above] = completeness_side
    return Comparison(result, thinned_index, in_mask, accuracy_distance, completeness_distance)
