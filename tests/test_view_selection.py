"""pair.txt scoring by triangulation angle (mvs.data.view_selection)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvs.data.view_selection import angle_score, pair_scores, select_views


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
