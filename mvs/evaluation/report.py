"""Files next to the point-cloud scores: error-coloured PLYs, an overview PNG, scores.json.

``evaluate_point_cloud(prediction_ply, gt, out_dir, config, render_camera)`` writes::

    OUT/scores.json               EvalResult.to_dict() + config, colour scale and file list
    OUT/prediction_errors.ply     thinned prediction coloured by distance to GT
    OUT/gt_errors.ply             GT coloured by distance to the thinned prediction
    OUT/evaluation.png            renderings, error renderings, histograms, P/R/F curves

Colours: ``turbo`` from 0 (blue) to ``config.color_range`` (red, also every farther
point); grey marks points that were not scored (prediction outside the observation mask,
GT on or below the ground plane).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mvs.cameras import Camera, look_at
from mvs.evaluation.ground_truth import GroundTruth
from mvs.evaluation.pointcloud import Comparison, EvalConfig, EvalResult, compare_point_clouds
from mvs.io import read_point_cloud, write_point_cloud
from mvs.visualize import colorize, render_point_cloud

CMAP = "turbo"
NOT_SCORED = (150, 150, 150)


def error_colors(distance: np.ndarray, color_max: float) -> np.ndarray:
    """(N,) distances -> (N, 3) uint8: turbo over [0, color_max], grey where NaN."""
    distance = np.asarray(distance, dtype=np.float64)
    scored = ~np.isnan(distance)
    values = np.where(np.isinf(distance), color_max, distance)
    return colorize(values[None], scored[None], vmin=0.0, vmax=color_max, cmap=CMAP,
                    background=NOT_SCORED)[0]


def default_render_camera(points: np.ndarray, up: np.ndarray | None = None,
                          width: int = 800, height: int = 600) -> Camera:
    """A camera looking down at 45 degrees on the bulk of ``points`` (framing ~90% of them)."""
    points = np.asarray(points, dtype=np.float64)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, np.float64) / np.linalg.norm(up)
    centre = np.median(points, axis=0) if len(points) else np.zeros(3)
    radius = float(np.percentile(np.linalg.norm(points - centre, axis=1), 90)) if len(points) else 1.0
    radius = max(radius, 1e-6)
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    direction = up + side / np.linalg.norm(side)
    distance = 3.0 * radius
    eye = centre + distance * direction / np.linalg.norm(direction)
    focal = 0.45 * min(width, height) * distance / radius
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    return Camera(K, look_at(eye, centre, up), width, height, 0.05 * distance, 20 * distance)


def write_error_plys(out_dir: Path, thinned: np.ndarray, comparison: Comparison, gt: GroundTruth,
                     color_max: float) -> dict[str, str]:
    """``prediction_errors.ply`` and ``gt_errors.ply`` (a side with no points is not written)."""
    files = {}
    for name, points, distance in (("prediction_errors", thinned, comparison.accuracy_distance),
                                   ("gt_errors", gt.points, comparison.completeness_distance)):
        if len(points):  # PLY writers refuse empty clouds
            path = out_dir / f"{name}.ply"
            write_point_cloud(path, points, error_colors(distance, color_max))
            files[name] = str(path)
    return files


def _finite_clipped(distance: np.ndarray, max_dist: float) -> np.ndarray:
    distance = distance[~np.isnan(distance)]
    return np.minimum(distance, max_dist)


def _score_lines(result: EvalResult) -> list[str]:
    m = result.max_dist
    lines = [
        f"{'':15}{'official':>9}{'capped':>9}{'outliers':>9}",
        f"{'accuracy':15}{result.accuracy:9.4f}{result.accuracy_capped:9.4f}"
        f"{100 * result.accuracy_outlier_fraction:8.2f}%",
        f"{'completeness':15}{result.completeness:9.4f}{result.completeness_capped:9.4f}"
        f"{100 * result.completeness_outlier_fraction:8.2f}%",
        f"{'overall':15}{result.overall:9.4f}{result.overall_capped:9.4f}",
        f"official: mean of distances < {m:g}",
        f"capped: distances capped at {m:g}",
        "",
        f"{'threshold':>10}{'precision':>11}{'recall':>9}{'F-score':>9}",
    ]
    for t in result.fscore:
        lines.append(f"{t:10g}{result.precision[t]:11.4f}{result.recall[t]:9.4f}{result.fscore[t]:9.4f}")
    lines += [
        "",
        f"prediction {result.prediction_points:,} points",
        f"  thinned to {result.spacing:g}: {result.thinned_points:,}",
        f"  in observation mask: {result.evaluated_points:,}",
        f"GT {result.gt_points:,} points, {result.gt_points_above_plane:,} above plane",
    ]
    return lines


def save_evaluation_figure(path: Path, points: np.ndarray, colors: np.ndarray | None, thinned: np.ndarray,
                           comparison: Comparison, gt: GroundTruth, camera: Camera,
                           config: EvalConfig) -> None:
    """2x3 panels: cloud rendering, accuracy- and completeness-coloured renderings,
    distance histograms, precision/recall/F-score against the threshold, the scores."""
    import matplotlib.pyplot as plt
    from matplotlib import cm
    from matplotlib import colors as mcolors

    result, vmax = comparison.result, config.color_range
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    renders = [
        (render_point_cloud(points, colors, camera, config.point_size), "prediction"),
        (render_point_cloud(thinned, error_colors(comparison.accuracy_distance, vmax), camera, config.point_size),
         "prediction: distance to GT (accuracy)"),
        (render_point_cloud(gt.points, error_colors(comparison.completeness_distance, vmax), camera,
                 config.point_size), "GT: distance to prediction (completeness)"),
    ]
    mappable = cm.ScalarMappable(mcolors.Normalize(0, vmax), CMAP)
    for ax, (image, title) in zip(axes[0], renders, strict=True):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    for ax in axes[0, 1:]:
        fig.colorbar(mappable, ax=ax, fraction=0.035, pad=0.02, label="distance (grey: not scored)")

    ax = axes[1, 0]
    bins = np.linspace(0, result.max_dist, 101)
    for distance, label in ((comparison.accuracy_distance, "accuracy (pred -> GT)"),
                            (comparison.completeness_distance, "completeness (GT -> pred)")):
        values = _finite_clipped(distance, result.max_dist)
        if len(values):
            ax.hist(values, bins=bins, histtype="step", label=label, log=True)
    ax.axvline(result.max_dist, color="k", ls=":", lw=1)
    ax.set_xlabel(f"distance (last bin: >= {result.max_dist:g}, outliers)")
    ax.set_ylabel("points")
    ax.legend(fontsize=8)
    ax.set_title("distance histograms", fontsize=10)

    ax = axes[1, 1]
    accuracy = _finite_clipped(comparison.accuracy_distance, np.inf)
    completeness = _finite_clipped(comparison.completeness_distance, np.inf)
    ts = np.geomspace(min((*config.thresholds, result.max_dist)) / 10, result.max_dist, 80)
    precision = np.searchsorted(np.sort(accuracy), ts) / max(len(accuracy), 1)
    recall = np.searchsorted(np.sort(completeness), ts) / max(len(completeness), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fscore = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    ax.semilogx(ts, precision, label="precision")
    ax.semilogx(ts, recall, label="recall")
    ax.semilogx(ts, fscore, label="F-score", color="k")
    for t in config.thresholds:
        ax.axvline(t, color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold")
    ax.legend(fontsize=8)
    ax.set_title("precision / recall / F-score", fontsize=10)

    ax = axes[1, 2]
    ax.axis("off")
    ax.text(0.0, 1.0, "\n".join(_score_lines(result)), va="top", ha="left", family="monospace",
            fontsize=9, transform=ax.transAxes)
    fig.suptitle(f"{result.ground_truth or 'evaluation'}: overall {result.overall:.3f}, "
                 f"capped {result.overall_capped:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_point_cloud(prediction_ply: Path, gt: GroundTruth, out_dir: Path,
                         config: EvalConfig | None = None,
                         render_camera: Camera | None = None) -> EvalResult:
    """Score ``prediction_ply`` against ``gt`` and write scores.json, PLYs and a PNG to ``out_dir``.

    ``render_camera``: viewpoint of the PNG's renderings (e.g. a scene camera); None picks one
    looking down at 45 degrees on the ground truth.
    """
    config = config or EvalConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    points, colors = read_point_cloud(prediction_ply)
    read_seconds = time.perf_counter() - start
    comparison = compare_point_clouds(points, gt, config)
    result = comparison.result
    result.timings = {"read": round(read_seconds, 4), **result.timings}
    thinned = points[comparison.thinned_index]
    files: dict[str, str] = {"scores": str(out_dir / "scores.json")}
    clock = time.perf_counter()
    if config.write_plys:
        files.update(write_error_plys(out_dir, thinned, comparison, gt, config.color_range))
    if config.write_png:
        finite = np.all(np.isfinite(points), axis=1)
        if render_camera is None:
            frame = gt.points[gt.above_plane()]
            frame = frame if len(frame) else (gt.points if len(gt.points) else points[finite])
            render_camera = default_render_camera(frame, None if gt.plane is None else gt.plane[:3])
        save_evaluation_figure(out_dir / "evaluation.png", points[finite],
                               None if colors is None else colors[finite], thinned, comparison, gt,
                               render_camera, config)
        files["figure"] = str(out_dir / "evaluation.png")
    result.timings["outputs"] = round(time.perf_counter() - clock, 4)
    scores = {
        **result.to_dict(),
        "prediction": str(prediction_ply),
        "config": asdict(config),
        "colour_scale": {"cmap": CMAP, "min": 0.0, "max": config.color_range,
                         "grey": "not scored: prediction outside the observation mask, "
                                 "GT on or below the ground plane"},
        "files": files,
    }
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return result
