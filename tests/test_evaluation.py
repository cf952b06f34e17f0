"""Evaluation: thinning, DTU-protocol scores, ground-truth files, depth metrics, consistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from mvs.cameras import Camera, look_at
from mvs.data.scene import Scene, View, load_scene
from mvs.evaluation import (
    DepthMetrics,
    EvalConfig,
    GroundTruth,
    ObservationMask,
    compare_point_clouds,
    cross_view_depth_consistency,
    depth_metrics,
    evaluate_depth_folder,
    evaluate_point_cloud,
    greedy_independent_set,
    silhouette_consistency,
    thin_points,
)
from mvs.evaluation.ground_truth import ground_patch_interior
from mvs.evaluation.thinning import spatial_order
from mvs.io import read_point_cloud, write_mask, write_pfm, write_point_cloud
from tests.conftest import make_plane_scene


# ----------------------------------------------------------------------------- brute force
def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def brute_nearest(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return pairwise(queries, reference).min(axis=1)


def sequential_greedy(points: np.ndarray, radius: float) -> np.ndarray:
    distance = pairwise(points, points)
    removed = np.zeros(len(points), bool)
    kept = np.zeros(len(points), bool)
    for i in range(len(points)):
        if not removed[i]:
            kept[i] = True
            removed |= distance[i] < radius
    return kept


def plane_grid(normal: np.ndarray, step: float, half: float, offset: float = 0.0) -> np.ndarray:
    """Points on a square grid in the plane through offset*normal with the given normal."""
    normal = normal / np.linalg.norm(normal)
    u = np.cross(normal, [1.0, 0, 0] if abs(normal[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    ticks = np.arange(-half, half + 1e-9, step)
    a, b = np.meshgrid(ticks, ticks)
    return offset * normal + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v


# ----------------------------------------------------------------------------- thinning
def test_greedy_independent_set_matches_sequential_greedy(rng):
    points = rng.uniform(0, 3, (400, 3))
    np.testing.assert_array_equal(greedy_independent_set(points, 0.5), sequential_greedy(points, 0.5))
    priority = rng.permutation(len(points))  # visit order: lowest priority first
    by_priority = np.argsort(priority)
    expected = np.zeros(len(points), bool)
    expected[by_priority] = sequential_greedy(points[by_priority], 0.5)
    np.testing.assert_array_equal(greedy_independent_set(points, 0.5, priority), expected)


def test_spatial_order_is_a_local_permutation(rng):
    points = rng.uniform(0, 100, (5000, 3))
    order = spatial_order(points)
    assert np.array_equal(np.sort(order), np.arange(len(points)))
    step = np.linalg.norm(np.diff(points[order], axis=0), axis=1)
    assert np.median(step) < 0.2 * np.median(np.linalg.norm(np.diff(points, axis=0), axis=1))


@pytest.mark.parametrize("spacing", [0.2, 0.35])
def test_thinning_spacing_and_coverage(rng, spacing):
    # A dense noisy patch plus exact duplicates: many conflicts.
    points = np.c_[rng.uniform(0, 2, (600, 2)), rng.normal(0, 0.05, 600)]
    points = np.concatenate([points, points[:50]])
    kept = thin_points(points, spacing, seed=3)
    assert np.all(np.diff(kept) > 0)
    distance = pairwise(points[kept], points[kept])
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= spacing
    removed = np.setdiff1d(np.arange(len(points)), kept)
    assert len(removed) > 0
    assert brute_nearest(points[removed], points[kept]).max() < spacing
    assert np.array_equal(thin_points(points, spacing, seed=3), kept)  # deterministic


def test_thinning_keeps_sparse_points_and_zero_spacing(rng):
    grid = plane_grid(np.array([0.0, 0, 1]), 0.5, 3.0)
    assert len(thin_points(grid, 0.2)) == len(grid)
    assert len(thin_points(grid, 0.0)) == len(grid)


# ----------------------------------------------------------------------------- scores
def test_scores_match_brute_force(rng):
    gt_points = np.c_[rng.uniform(0, 10, (400, 2)), rng.uniform(0, 1, 400)]
    pred = gt_points[:300] + rng.normal(0, 0.4, (300, 3))
    pred = np.concatenate([pred, rng.uniform(-40, 40, (20, 3)) + [0, 0, 60]])  # far outliers
    config = EvalConfig(spacing=0.0, max_dist=5.0, thresholds=(0.3, 1.0))
    result = compare_point_clouds(pred, GroundTruth(gt_points), config).result
    acc, comp = brute_nearest(pred, gt_points), brute_nearest(gt_points, pred)
    assert result.accuracy == pytest.approx(acc[acc < 5].mean())
    assert result.completeness == pytest.approx(comp[comp < 5].mean())
    assert result.overall == pytest.approx((acc[acc < 5].mean() + comp[comp < 5].mean()) / 2)
    assert result.accuracy_capped == pytest.approx(np.minimum(acc, 5).mean())
    assert result.completeness_capped == pytest.approx(np.minimum(comp, 5).mean())
    assert result.accuracy_outlier_fraction == pytest.approx((acc >= 5).mean())
    assert result.accuracy_outlier_fraction >= 20 / 320
    assert result.accuracy_median == pytest.approx(np.median(acc))
    for t in (0.3, 1.0):
        p, r = (acc < t).mean(), (comp < t).mean()
        assert result.precision[t] == pytest.approx(p)
        assert result.recall[t] == pytest.approx(r)
        assert result.fscore[t] == pytest.approx(2 * p * r / (p + r))


def test_scores_with_thinning_mask_and_plane_match_brute_force(rng):
    gt_points = np.c_[rng.uniform(0, 8, (500, 2)), rng.uniform(-1, 1, 500)]
    pred = np.concatenate([gt_points + rng.normal(0, 0.1, gt_points.shape), gt_points[:200]])
    mask = ObservationMask(np.zeros((5, 5, 4), bool), [0, 0, -1], 2.0)
    mask.grid[:3] = True  # observed: x < 5
    gt = GroundTruth(gt_points, mask, np.array([0, 0, 1.0, -0.2]))  # above: z > 0.2
    comparison = compare_point_clouds(pred, gt, EvalConfig(spacing=0.3, max_dist=2.0))
    result = comparison.result
    thinned = pred[comparison.thinned_index]
    distance = pairwise(thinned, thinned)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= 0.3
    in_mask = np.floor(thinned[:, 0] / 2.0 + 0.5) < 3
    np.testing.assert_array_equal(comparison.in_mask, in_mask)
    acc = brute_nearest(thinned[in_mask], gt_points)
    comp = brute_nearest(gt_points[gt_points[:, 2] > 0.2], thinned)
    assert result.evaluated_points == in_mask.sum() < len(thinned)
    assert result.gt_points_above_plane == (gt_points[:, 2] > 0.2).sum()
    assert result.accuracy == pytest.approx(acc[acc < 2].mean())
    assert result.completeness == pytest.approx(comp[comp < 2].mean())
    assert result.recall[1.0] == pytest.approx((comp < 1).mean())


def test_identical_clouds_score_zero():
    grid = plane_grid(np.array([0.3, -0.2, 1.0]), 0.25, 4.0)  # sparser than the spacing
    result = compare_point_clouds(grid, GroundTruth(grid)).result
    assert result.thinned_points == len(grid)
    assert result.accuracy == result.completeness == result.overall == 0.0
    assert result.fscore[0.5] == 1.0


def test_shift_along_normal_gives_shift():
    normal = np.array([0.3, -0.2, 1.0])
    gt_points = plane_grid(normal, 0.25, 4.0)
    pred = gt_points + 0.3 * normal / np.linalg.norm(normal)
    result = compare_point_clouds(pred, GroundTruth(gt_points)).result
    assert result.accuracy == pytest.approx(0.3, abs=1e-9)
    assert result.completeness == pytest.approx(0.3, abs=1e-9)
    assert result.precision[0.5] == result.recall[0.5] == 1.0
    # A dense GT seen by a thinned prediction: completeness slightly above the shift.
    dense = plane_grid(normal, 0.05, 2.0)
    result = compare_point_clouds(dense + 0.3 * normal / np.linalg.norm(normal), GroundTruth(dense)).result
    assert result.thinned_points < len(dense)
    assert result.accuracy == pytest.approx(0.3, abs=1e-9)
    assert 0.3 <= result.completeness < np.hypot(0.3, 0.2)


def test_outliers_excluded_from_official_mean_and_capped():
    gt_points = plane_grid(np.array([0.0, 0, 1]), 0.25, 4.0)
    far = np.array([[0, 0, 25.0], [1, 1, 50.0], [2, 0, 30.0]])
    pred = np.concatenate([gt_points + [0, 0, 0.3], far])
    result = compare_point_clouds(pred, GroundTruth(gt_points)).result
    n = len(gt_points) + 3
    assert result.accuracy == pytest.approx(0.3)
    assert result.accuracy_outlier_fraction == pytest.approx(3 / n)
    assert result.accuracy_capped == pytest.approx((0.3 * len(gt_points) + 3 * 20.0) / n)
    assert result.completeness == pytest.approx(0.3)
    assert result.completeness_outlier_fraction == 0.0


def test_ground_plane_and_observation_mask():
    surface = plane_grid(np.array([0.0, 0, 1]), 0.25, 4.0, offset=5.0)
    below = plane_grid(np.array([0.0, 0, 1]), 0.25, 4.0, offset=-10.0)  # not predicted
    gt_points = np.concatenate([surface, below])
    outside = np.array([[0, 0, 8.0], [1, 0, 9.0]])  # 3-4 mm off, outside the mask
    pred = np.concatenate([surface + [0, 0, 0.1], outside])
    mask = ObservationMask.from_points(gt_points, voxel_size=0.5, margin=1.0)
    assert mask.contains(surface + [0, 0, 0.1]).all() and not mask.contains(outside).any()
    gt = GroundTruth(gt_points, mask, np.array([0, 0, 1.0, 0.0]))
    result = compare_point_clouds(pred, gt).result
    assert result.gt_points_above_plane == len(surface)
    assert result.completeness == pytest.approx(0.1)
    assert result.evaluated_points == len(surface)
    assert result.accuracy == pytest.approx(0.1)
    # Without plane and mask both sides see the extra points.
    loose = compare_point_clouds(pred, GroundTruth(gt_points)).result
    assert loose.accuracy > 0.1 and loose.completeness > 1.0


def test_observation_mask_margin():
    points = np.array([[0.0, 0, 0], [10.0, 0, 0]])
    mask = ObservationMask.from_points(points, voxel_size=0.5, margin=2.0)
    probe = np.array([[1.8, 0, 0], [0, 1.9, 0], [3.0, 0, 0], [5.0, 0, 0], [10, 0, -1.5], [20, 0, 0]])
    np.testing.assert_array_equal(mask.contains(probe), [True, True, False, False, True, False])


# ----------------------------------------------------------------------------- DTU files
def write_fake_dtu(root: Path, scan: int, gt_points: np.ndarray) -> None:
    (root / "Points" / "stl").mkdir(parents=True)
    (root / "ObsMask").mkdir()
    write_point_cloud(root / "Points" / "stl" / f"stl{scan:03d}_total.ply", gt_points)
    grid = np.zeros((4, 3, 2), bool)
    grid[1, 2, 1] = True  # the voxel centred at BB[0] + (1, 2, 1) * Res
    grid[0, 0, 0] = True
    bb = np.array([[10.0, 20.0, 30.0], [18.0, 26.0, 34.0]])
    scipy.io.savemat(root / "ObsMask" / f"ObsMask{scan}_10.mat", {"ObsMask": grid, "BB": bb, "Res": 2.0})
    scipy.io.savemat(root / "ObsMask" / f"Plane{scan}.mat", {"P": np.array([[0.0], [0.0], [1.0], [-31.0]])})


def test_dtu_files_are_read_and_applied(tmp_path):
    gt_points = np.array([[12.0, 24.0, 32.0], [10.0, 20.0, 30.0], [12.2, 24.1, 32.5]])
    write_fake_dtu(tmp_path, 7, gt_points)
    gt = GroundTruth.from_dtu(tmp_path, 7)
    assert gt.obs_mask.grid.shape == (4, 3, 2) and gt.obs_mask.resolution == 2.0
    np.testing.assert_allclose(gt.obs_mask.origin, [10, 20, 30])
    np.testing.assert_allclose(gt.plane, [0, 0, 1, -31])
    np.testing.assert_allclose(gt.points, gt_points)
    probe = np.array([
        [12.0, 24.0, 32.0],  # voxel (1, 2, 1): observed
        [12.9, 24.9, 32.9],  # same voxel (rounds down)
        [13.1, 24.0, 32.0],  # voxel (2, 2, 1): not observed
        [9.1, 19.1, 29.1],  # voxel (0, 0, 0), inside by rounding
        [8.9, 20.0, 30.0],  # index -1: outside the grid
    ])
    np.testing.assert_array_equal(gt.obs_mask.contains(probe), [True, True, False, True, False])
    np.testing.assert_array_equal(gt.above_plane(), [True, False, True])
    result = compare_point_clouds(probe, gt, EvalConfig(spacing=0.0)).result
    assert result.evaluated_points == 3
    assert result.gt_points_above_plane == 2


def test_dtu_missing_or_malformed_files(tmp_path):
    from mvs.errors import MVSInputError

    with pytest.raises(MVSInputError, match="stl"):
        GroundTruth.from_dtu(tmp_path, 1)
    write_fake_dtu(tmp_path, 1, np.zeros((2, 3)))
    scipy.io.savemat(tmp_path / "ObsMask" / "Plane1.mat", {"Q": np.ones(4)})
    with pytest.raises(MVSInputError, match="P"):
        GroundTruth.from_dtu(tmp_path, 1)


# ----------------------------------------------------------------------------- end to end
def test_synthetic_scene_end_to_end(tmp_path, rng):
    scene_dir = tmp_path / "scene"
    scene_dir.mkdir()
    table = np.c_[rng.uniform(-30, 30, (3000, 2)), np.zeros(3000)]
    direction = rng.normal(size=(3000, 3))
    ball = direction / np.linalg.norm(direction, axis=1, keepdims=True) * 10 + [0, 0, 10]
    gt_points = np.concatenate([table, ball])
    write_point_cloud(scene_dir / "gt_points.ply", gt_points)
    gt = GroundTruth.from_synthetic_scene(scene_dir)
    assert gt.above_plane().sum() == (ball[:, 2] > 0).sum()  # the table (z = 0) is not above
    pred = ball + rng.normal(0, 0.2, ball.shape)
    colors = rng.integers(0, 255, pred.shape, dtype=np.uint8)
    write_point_cloud(tmp_path / "fused.ply", np.concatenate([pred, [[200.0, 0, 0]]]),
                      np.concatenate([colors, [[0, 0, 0]]]).astype(np.uint8))
    out = tmp_path / "eval"
    camera = Camera(np.array([[100.0, 0, 40], [0, 100, 30], [0, 0, 1]]),
                    look_at(np.array([0, -80, 80.0]), np.array([0, 0, 5.0])), 80, 60, 10, 500)
    result = evaluate_point_cloud(tmp_path / "fused.ply", gt, out, EvalConfig(), camera)
    assert result.prediction_points == 3001 and result.evaluated_points < result.thinned_points
    assert 0.1 < result.accuracy < 0.5
    scores = json.loads((out / "scores.json").read_text())
    assert scores["accuracy"] == pytest.approx(result.accuracy)
    assert set(scores["fscore"]) == {"0.5", "1", "2"}
    for name in ("prediction_errors.ply", "gt_errors.ply", "evaluation.png"):
        assert (out / name).stat().st_size > 0
    points, error_rgb = read_point_cloud(out / "gt_errors.ply")
    assert len(points) == len(gt_points) and error_rgb is not None
    assert (error_rgb[: len(table)] == 150).all()  # table: not scored, grey
    # default camera path
    evaluate_point_cloud(tmp_path / "fused.ply", gt, tmp_path / "eval2", EvalConfig(write_plys=False))
    assert (tmp_path / "eval2" / "evaluation.png").is_file()


def test_ground_patch_interior_leaves_out_the_outer_edge_only():
    normal = np.array([0.3, -0.2, 1.0])
    normal /= np.linalg.norm(normal)
    plane = np.array([*normal, -2.0])  # the plane through 2 * normal
    patch = plane_grid(normal, 0.25, 20.0, offset=2.0)  # a 40 x 40 square
    u = patch - 2.0 * normal
    v = np.cross(normal, [1.0, 0, 0])
    v /= np.linalg.norm(v)
    w = np.cross(normal, v)
    a, b = u @ v, u @ w
    hole = np.hypot(a, b) < 5.0  # e.g. under an object
    points = np.concatenate([patch[~hole], [[0, 0, 10.0]]])  # and one point off the plane
    a, b = a[~hole], b[~hole]
    interior = ground_patch_interior(points, plane, margin=3.0, cell=0.5)
    edge_distance = 20.0 - np.maximum(np.abs(a), np.abs(b))
    assert not interior[-1]
    assert interior[:-1][edge_distance > 3.6].all()  # within a cell of the exact rule
    assert not interior[:-1][edge_distance < 2.4].any()
    assert interior[:-1][np.hypot(a, b) < 6.0].all()  # the hole's rim stays


def test_synthetic_mask_does_not_score_table_beyond_the_gt_patch(tmp_path):
    """The GT holds a table patch; the table in the images goes on. An exact prediction of
    the table beyond the patch must not count as error (it would be up to ``margin`` from
    any GT point if the mask were dilated past the patch's edge)."""
    up = np.array([0.0, 0, 1])
    ball = plane_grid(up, 0.2, 10.0, offset=0.0) * [1, 1, 0] + [0, 0, 8.0]  # a flat top 8 mm up
    table_gt = plane_grid(up, 0.2, 30.0)
    write_point_cloud(tmp_path / "gt_points.ply", np.concatenate([table_gt, ball]))
    (tmp_path / "scene.json").write_text(json.dumps({"ground_plane": [0, 0, 1, 0], "config": {"gt_spacing": 0.2}}))
    gt = GroundTruth.from_synthetic_scene(tmp_path)
    prediction = np.concatenate([plane_grid(up, 0.2, 45.0), ball])  # exact, table 15 mm wider
    result = compare_point_clouds(prediction, gt, EvalConfig(spacing=0.0)).result
    # Measured 0.0065: the mask ends within a voxel (1 mm) of the edge, not exactly at it.
    assert result.accuracy < 0.02
    # The mask still reaches the patch's edge (table points up to there are scored) ...
    assert gt.obs_mask.contains(np.array([[29.0, 0, 0], [0, -29.0, 0.5]])).all()
    assert not gt.obs_mask.contains(np.array([[31.0, 0, 0]])).any()
    # ... and dilating every GT point would have scored the rim beyond it.
    dilated = GroundTruth(gt.points, ObservationMask.from_points(gt.points), gt.plane)
    assert compare_point_clouds(prediction, dilated, EvalConfig(spacing=0.0)).result.accuracy > 0.05


def test_synthetic_ground_plane_from_scene_json(tmp_path):
    write_point_cloud(tmp_path / "gt_points.ply", np.array([[0, 0, 1.0], [0, 0, 3.0]]))
    (tmp_path / "scene.json").write_text(json.dumps({"ground_plane": [0, 0, 1, -2]}))
    gt = GroundTruth.from_synthetic_scene(tmp_path)
    np.testing.assert_array_equal(gt.above_plane(), [False, True])


# ----------------------------------------------------------------------------- depth maps
def test_depth_metrics_known_answers():
    gt = np.array([[10.0, 10.0, 10.0], [10.0, 10.0, 0.0]])
    pred = np.array([[10.5, 13.0, 0.0], [19.0, 10.0, 5.0]])
    m = depth_metrics(pred, gt, thresholds=(1, 2, 4), error_thresholds=(2, 4, 8))
    # valid: 5 pixels (gt > 0); predicted: 4 (errors 0.5, 3, 9, 0); one missing.
    assert (m.valid_pixels, m.predicted_pixels) == (5, 4)
    assert m.mae == pytest.approx((0.5 + 3 + 9 + 0) / 4)
    assert m.coverage == pytest.approx(0.8)
    assert m.within == pytest.approx({1.0: 2 / 5, 2.0: 2 / 5, 4.0: 3 / 5})
    assert m.error_rate == pytest.approx({2.0: 3 / 5, 4.0: 2 / 5, 8.0: 2 / 5})
    masked = depth_metrics(torch.tensor(pred), torch.tensor(gt), mask=np.array([[1, 1, 0], [0, 0, 0]]))
    assert masked.valid_pixels == 2 and masked.mae == pytest.approx(1.75)


def test_depth_metrics_resizes_gt_nearest():
    gt = np.kron(np.array([[1.0, 2.0], [3.0, 0.0]]), np.ones((4, 4)))  # 8x8 blocks
    pred = np.array([[1.0, 2.0], [3.0, 7.0]])  # 2x2
    m = depth_metrics(pred, gt)
    assert m.valid_pixels == 3 and m.mae == 0.0 and m.within[1.0] == 1.0


def test_evaluate_depth_folder(tmp_path):
    make_plane_scene(tmp_path / "scene", views=4)
    scene = load_scene(tmp_path / "scene")
    pred_dir = tmp_path / "recon" / "depths"
    pred_dir.mkdir(parents=True)
    for v in (0, 1, 2):
        write_pfm(pred_dir / f"{v:08d}.pfm", scene.depth(v) + (3.0 if v == 0 else 0.0))
    result = evaluate_depth_folder(tmp_path / "recon", scene)
    assert result.missing_views == [3]
    assert result.per_view[0].mae == pytest.approx(3.0, abs=1e-3) and result.per_view[1].mae < 1e-3
    assert result.total.within[1.0] == pytest.approx(2 / 3)
    assert result.total.error_rate[2.0] == pytest.approx(1 / 3)
    assert result.total == DepthMetrics.combine(result.per_view.values())
    json.dumps(result.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- consistency
SPHERE_CENTRE, SPHERE_RADIUS = np.array([0.0, 0.0, 40.0]), 40.0


def sphere_hits(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool silhouette and (H, W, 3) first intersections of pixel-centre rays."""
    ys, xs = np.mgrid[0 : camera.height, 0 : camera.width]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(camera.intrinsics).T @ camera.rotation
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    oc = camera.center - SPHERE_CENTRE
    b = rays @ oc
    disc = b**2 - (oc @ oc - SPHERE_RADIUS**2)
    t = -b - np.sqrt(np.maximum(disc, 0))
    return disc > 0, camera.center + t[..., None] * rays


def sphere_scene(root: Path, views: int = 6) -> tuple[Scene, dict]:
    root.mkdir(parents=True, exist_ok=True)
    cams, hits = {}, {}
    for v in range(views):
        angle = 2 * np.pi * v / views
        centre = np.array([300 * np.cos(angle), 300 * np.sin(angle), 200.0])
        K = np.array([[120.0, 0, 31.5], [0, 120.0, 23.5], [0, 0, 1]])
        camera = Camera(K, look_at(centre, SPHERE_CENTRE), 64, 48, 100, 700)
        mask, points = sphere_hits(camera)
        write_mask(root / f"{v}.png", mask)
        cams[v], hits[v] = camera, (mask, points)
    scene_views = {v: View(v, root / "none.png", cams[v], None, root / f"{v}.png") for v in cams}
    pairs = {v: [(s, 1.0) for s in cams if s != v] for v in cams}
    return Scene(root, scene_views, pairs), hits


def test_silhouette_consistency(tmp_path):
    scene, hits = sphere_scene(tmp_path)
    points = np.concatenate([hits[v][1][hits[v][0]] for v in hits])
    source = np.concatenate([np.full(hits[v][0].sum(), v) for v in hits])
    good = silhouette_consistency(points, source, scene)
    assert good.fraction == 1.0 and good.candidates == len(points)
    assert all(s.fraction == 1.0 for s in good.per_view.values())
    # Points pushed far behind the sphere along view 0's rays: inside view 0's silhouette,
    # outside the others'.
    mask0, hit0 = hits[0]
    behind = scene.views[0].camera.center + 1.4 * (hit0[mask0][:50] - scene.views[0].camera.center)
    # A point off view 0's silhouette is not a candidate.
    off = np.array([[0.0, 0.0, 200.0]])
    result = silhouette_consistency(np.concatenate([points, behind, off]),
                                    np.concatenate([source, np.zeros(51, int)]), scene)
    assert result.candidates == len(points) + 50
    assert result.fraction == pytest.approx(len(points) / (len(points) + 50))
    assert result.per_source_view[0] < 1.0 and result.per_source_view[1] == 1.0
    json.dumps(result.to_dict(), allow_nan=False)


def test_cross_view_depth_consistency(tmp_path):
    make_plane_scene(tmp_path / "scene", views=5)
    scene = load_scene(tmp_path / "scene")
    depths = {v: scene.depth(v) for v in scene.view_ids}
    good = cross_view_depth_consistency(depths, scene)
    assert good.fraction > 0.9
    depths[0] = depths[0] * 1.05
    bad = cross_view_depth_consistency(depths, scene)
    assert bad.per_view[0]["fraction"] < 0.05
    json.dumps(bad.to_dict(), allow_nan=False)
    assert min(bad.per_view[v]["fraction"] for v in (1, 2, 3, 4)) > 0.85
    # Lower resolution maps: cameras are rescaled.
    half = {v: d[::2, ::2] for v, d in depths.items() if v != 0}
    assert cross_view_depth_consistency(half, scene).fraction > 0.85


def test_empty_prediction_is_scored_not_crashed(tmp_path):
    gt_points = plane_grid(np.array([0.0, 0, 1]), 0.5, 3.0, offset=1.0)
    (tmp_path / "empty.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n"
    )
    result = evaluate_point_cloud(tmp_path / "empty.ply", GroundTruth(gt_points), tmp_path / "out")
    assert result.prediction_points == 0 and np.isnan(result.accuracy)
    assert result.completeness_capped == 20.0 and result.completeness_outlier_fraction == 1.0
    assert result.fscore[1.0] == 0.0 or np.isnan(result.fscore[1.0])
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["accuracy"] is None
