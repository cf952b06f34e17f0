"""Speed of the DTU-protocol point-cloud evaluation on a DTU-sized synthetic case.

A surface (a sphere resting on a table patch, mm) is sampled for ~2.5 M ground-truth
points and, independently, for ~5 M predicted points with noise, a bias patch, a hole
and 3% outliers (half floating anywhere, half 1-30 mm off the surface). Times the full pipeline (thinning to 0.2 mm, observation mask,
both nearest-neighbour distances, scores), then the file-based ``evaluate_point_cloud``
(PLY read, error PLYs, PNG). Writes benchmarks/results/evaluation_speed.json.

    .venv/bin/python benchmarks/evaluation_speed.py [--pred 5000000] [--gt 2500000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from mvs.evaluation import (  # noqa: E402
    EvalConfig,
    GroundTruth,
    ObservationMask,
    compare_point_clouds,
    evaluate_point_cloud,
)
from mvs.io import write_point_cloud  # noqa: E402

SPHERE_CENTRE, SPHERE_RADIUS, TABLE_RADIUS = np.array([0.0, 0.0, 80.0]), 80.0, 150.0


def sample_surface(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` points uniformly by area on the sphere and the table disc around it."""
    sphere_area = 4 * np.pi * SPHERE_RADIUS**2
    table_area = np.pi * TABLE_RADIUS**2
    on_sphere = rng.binomial(count, sphere_area / (sphere_area + table_area))
    direction = rng.normal(size=(on_sphere, 3))
    sphere = SPHERE_CENTRE + SPHERE_RADIUS * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    r = TABLE_RADIUS * np.sqrt(rng.uniform(size=count - on_sphere))
    angle = rng.uniform(0, 2 * np.pi, count - on_sphere)
    table = np.stack([r * np.cos(angle), r * np.sin(angle), np.zeros_like(r)], 1)
    return np.concatenate([sphere, table])


def make_prediction(rng: np.random.Generator, count: int) -> np.ndarray:
    outliers = int(0.03 * count)
    surface = sample_surface(rng, int((count - outliers) * 1.08))
    # A hole (the sphere's far side, x < -60) and a 0.5 mm bias patch (y > 50).
    surface = surface[~((surface[:, 0] < -60) & (surface[:, 2] > 1))][: count - outliers]
    surface += rng.normal(0, 0.15, surface.shape)
    surface[surface[:, 1] > 50, 2] += 0.5
    # Outliers: half floating anywhere, half 1-30 mm off the surface (inside the mask or not).
    floaters = rng.uniform([-160, -160, -10], [160, 160, 200], (outliers // 2, 3))
    near = sample_surface(rng, outliers - outliers // 2)
    offset = rng.normal(size=near.shape)
    near += offset / np.linalg.norm(offset, axis=1, keepdims=True) * rng.uniform(1, 30, (len(near), 1))
    return np.concatenate([surface, floaters, near])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=int, default=5_000_000)
    parser.add_argument("--gt", type=int, default=2_500_000)
    parser.add_argument("--no-files", action="store_true", help="skip the file-based run")
    args = parser.parse_args()

    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    clock = time.perf_counter()
    gt_points = sample_surface(rng, args.gt)
    prediction = make_prediction(rng, args.pred)
    print(f"data: {len(prediction):,} predicted, {len(gt_points):,} GT points "
          f"({time.perf_counter() - clock:.1f} s to synthesise)")

    clock = time.perf_counter()
    mask = ObservationMask.from_points(gt_points)  # synthetic defaults: 1 mm voxels, 5 mm margin
    gt = GroundTruth(gt_points, mask, np.array([0, 0, 1.0, 0]), name="benchmark sphere on table")
    mask_seconds = time.perf_counter() - clock
    print(f"ground truth: observation mask {mask.grid.shape} voxels in {mask_seconds:.2f} s")

    config = EvalConfig()
    clock = time.perf_counter()
    result = compare_point_clouds(prediction, gt, config).result
    pipeline_seconds = time.perf_counter() - clock
    for stage, seconds in result.timings.items():
        print(f"  {stage:24s} {seconds:7.2f} s")
    print(f"pipeline total            {pipeline_seconds:7.2f} s  (target < 60 s)")
    print(result.summary())

    files = None
    if not args.no_files:
        with tempfile.TemporaryDirectory() as tmp:
            ply = Path(tmp) / "prediction.ply"
            colors = rng.integers(60, 200, prediction.shape, dtype=np.uint8)
            write_point_cloud(ply, prediction, colors)
            clock = time.perf_counter()
            file_result = evaluate_point_cloud(ply, gt, Path(tmp) / "eval", config)
            files = {"total_seconds": round(time.perf_counter() - clock, 2), "stages": file_result.timings}
            print(f"evaluate_point_cloud (read PLY, pipeline, error PLYs, PNG): {files['total_seconds']:.1f} s")
            for stage, seconds in file_result.timings.items():
                print(f"  {stage:24s} {seconds:7.2f} s")

    report = {
        "description": "point-cloud evaluation, DTU protocol (thin 0.2, mask, both distances, scores)",
        "scipy": scipy.__version__,
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2),
                              "note": "other jobs share these cores; load > cores slows every stage"},
        "prediction_points": int(len(prediction)),
        "gt_points": int(len(gt_points)),
        "config": {"spacing": config.spacing, "max_dist": config.max_dist, "thresholds": list(config.thresholds)},
        "observation_mask": {"shape": list(mask.grid.shape), "seconds": round(mask_seconds, 3)},
        "pipeline_seconds": round(pipeline_seconds, 3),
        "stage_seconds": result.timings,
        "target_seconds": 60,
        "file_based": files,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "scores": result.to_dict(),
    }
    write_result("evaluation_speed", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
