"""pair.txt scoring by triangulation angle, from points or from cameras alone (mvs.data.view_selection)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvs.cameras import Camera, look_at
from mvs.data.scene import load_scene
from mvs.data.synthetic import SynthConfig, generate_scene
from mvs.data.view_selection import (
    angle_score,
    frustum_samples,
    pair_scores,
    pairs_from_cameras,
    select_views,
)


def ring(angles_deg, radius: float = 600.0) -> np.ndarray:
    """Camera centres on a horizontal circle around the origin."""
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([radius * np.cos(a), radius * np.sin(a), np.zeros_like(a)], 1)


def test_score_formula_by_hand():
    # Two points at the origin and on the z axis; cameras chosen so the angles are known.
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    centres = np.array([[100.0, 0.0, 0.0], [100.0 * math.cos(math.radians(4.0)), 100.0 * math.sin(math.radians(4.0)), 0.0]])
    visibility = np.ones((2, 2), bool)
    scores, shared = pair_scores(points, visibility, centres)
    # Point 0 sees the cameras 4 degrees apart (sigma 1 below theta0 = 5).
    expected = math.exp(-((4.0 - 5.0) ** 2) / (2 * 1.0**2))
    # Point 1: the angle between (c0 - p1) and (c1 - p1), by hand.
    r0, r1 = centres[0] - points[1], centres[1] - points[1]
    theta = math.degrees(math.acos(r0 @ r1 / (np.linalg.norm(r0) * np.linalg.norm(r1))))
    assert theta < 5.0
    expected += math.exp(-((theta - 5.0) ** 2) / (2 * 1.0**2))
    assert scores[0, 1] == pytest.approx(expected, rel=1e-12)
    assert scores[1, 0] == scores[0, 1] and scores[0, 0] == 0.0
    assert shared.tolist() == [[2, 2], [2, 2]]


def test_angle_score_two_sided_gaussian():
    assert angle_score(5.0) == pytest.approx(1.0)
    assert angle_score(4.0) == pytest.approx(math.exp(-0.5))  # sigma 1 below 5 degrees
    assert angle_score(15.0) == pytest.approx(math.exp(-0.5))  # sigma 10 above
    assert angle_score(25.0) == pytest.approx(math.exp(-2.0))
    assert angle_score(0.0) < angle_score(30.0)  # too small a baseline is worse than a wide one


def test_views_around_five_degrees_rank_first():
    # Reference at 0 deg; others at 1 (too small a baseline), 5, 10, 15, 30, 60 deg.
    angles = [0.0, 1.0, 5.0, 10.0, 15.0, 30.0, 60.0]
    rng = np.random.default_rng(0)
    points = rng.normal(scale=5.0, size=(200, 3))  # small cloud at the ring centre
    visibility = np.ones((len(angles), len(points)), bool)
    pairs = select_views(points, visibility, ring(angles))
    order = [angles[s] for s, _ in pairs[0]]
    assert order[:3] == [5.0, 10.0, 15.0]
    assert order.index(1.0) > order.index(10.0)
    assert len(pairs[0]) == len(angles) - 1  # fewer views than num_sources: all of them
    scores = [score for _, score in pairs[0]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(200 * 1.0, rel=0.05)  # ~every point at ~5 degrees


def test_view_sharing_no_points_is_never_selected():
    angles = [0.0, 5.0, 10.0, 7.0]
    points = np.zeros((30, 3))
    visibility = np.ones((4, 30), bool)
    visibility[3] = False
    visibility[3, 25:] = True  # view 3 sees only points 25..29 ...
    visibility[:3, 25:] = False  # ... that nobody else sees
    pairs = select_views(points, visibility, ring(angles))
    assert pairs[3] == []
    for ref in range(3):
        assert 3 not in [s for s, _ in pairs[ref]]
        assert len(pairs[ref]) == 2


def test_num_sources_and_view_ids():
    angles = np.arange(0.0, 60.0, 5.0)
    points = np.random.default_rng(1).normal(size=(50, 3))
    visibility = np.ones((len(angles), 50), bool)
    ids = [100 + k for k in range(len(angles))]
    pairs = select_views(points, visibility, ring(angles), num_sources=3, view_ids=ids)
    assert list(pairs) == ids
    assert all(len(sources) == 3 for sources in pairs.values())
    assert [s for s, _ in pairs[105]][:2] in ([104, 106], [106, 104])


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="visibility"):
        select_views(np.zeros((5, 3)), np.ones((2, 4), bool), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="points"):
        select_views(np.zeros((5, 2)), np.ones((2, 5), bool), np.zeros((2, 3)))


# ----------------------------------------------------------------------------- from cameras alone


@pytest.fixture(scope="module")
def synthetic_scene(tmp_path_factory):
    """6 views of a synthetic scene; its pair.txt was scored on the true surface."""
    root = tmp_path_factory.mktemp("view_selection") / "scene"
    generate_scene(root, SynthConfig(views=6, width=64, height=48, lights=1, test_light=0, gt_spacing=2.0), 4)
    return load_scene(root)


def test_pairs_from_cameras_agree_with_the_synthetic_pair_txt(synthetic_scene):
    scene = synthetic_scene
    ids = [100 + v for v in scene.view_ids]  # ids other than positions are carried through
    pairs = pairs_from_cameras([scene.views[v].camera for v in scene.view_ids], num_sources=4, view_ids=ids)
    assert list(pairs) == ids
    for view, sources in zip(scene.view_ids, pairs.values(), strict=True):
        chosen = [s - 100 for s, _ in sources]
        assert view not in chosen and len(chosen) == len(set(chosen)) == 4
        scores = [score for _, score in sources]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
        # Frustum samples stand in for the surface: the best source is one of the two best
        # that the true surface gave.
        assert chosen[0] in [s for s, _ in scene.pairs[view][:2]], (view, chosen, scene.pairs[view])


def test_frustum_samples_shapes_and_a_view_facing_away():
    K = np.array([[80.0, 0.0, 32.0], [0.0, 80.0, 24.0], [0.0, 0.0, 1.0]])
    cameras = [
        Camera(K, look_at(center, np.zeros(3), up=np.array([0.0, 1.0, 0.0])), 64, 48, 400.0, 800.0)
        for center in ring([0.0, 5.0, 10.0, 15.0]) + np.array([0.0, 0.0, 100.0])
    ]
    away = ring([180.0])[0] * 3  # far outside the ring, looking away from it
    cameras.append(Camera(K, look_at(away, away * 2, up=np.array([0.0, 0.0, 1.0])), 64, 48, 400.0, 800.0))
    points, visibility = frustum_samples(cameras, grid=(4, 3))
    assert points.shape == (5 * 4 * 3 * 3, 3) and visibility.shape == (5, len(points))
    for v in range(5):  # every camera sees its own samples
        assert visibility[v, v * 36 : (v + 1) * 36].all()
    pairs = pairs_from_cameras(cameras)
    assert pairs[4] == []  # overlaps nobody: no sources, and nobody's source
    for view in range(4):
        chosen = [s for s, _ in pairs[view]]
        assert sorted(chosen) == sorted(set(range(4)) - {view})
