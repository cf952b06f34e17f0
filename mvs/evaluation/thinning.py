"""Thinning a point cloud to a minimum spacing (the DTU protocol's first step).

The official DTU script visits the points in a random order and, for each point still
present, deletes every other point closer than the spacing. What it guarantees is:

* no two kept points are closer than ``spacing``;
* every removed point lies closer than ``spacing`` to a kept point.

:func:`thin_points` returns a subset with the same two guarantees, fast on millions of
points, in rounds:

1. Points get a random priority (a seeded permutation: the official random order).
2. Voxel pre-bucketing: cells of edge ``spacing / sqrt(3)`` have a diagonal shorter than
   ``spacing``, so a cell can hold at most one kept point. Each cell's candidate is its
   highest-priority point.
3. Among the candidates, the greedy maximal independent set in priority order (the set the
   sequential greedy would keep) is computed exactly with parallel rounds (Blelloch,
   Fineman and Shun, SPAA 2012): conflicts are candidate pairs closer than ``spacing``
   (``cKDTree.query_pairs``); a candidate is kept once no undecided conflicting candidate
   comes before it, and its conflicting candidates are then removed. Random priorities
   make the number of rounds logarithmic.
4. A cell whose candidate was removed may hold points that no kept point covers; those
   (found with a KD-tree query of the kept points) go round again from step 2. They are
   at least ``spacing`` from every kept point, so the union stays independent.

The kept subset is not the one a purely sequential pass would keep (cells are settled
candidate-first), but it has the same guarantees and the same density.

KD-trees are built and queried on points in Morton (Z-curve) order
(:func:`spatial_order`): on a shuffled cloud that makes building twice and querying
several times faster, through memory locality alone.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# Cell edge is spacing / sqrt(3) shrunk by this factor, so the diagonal is strictly shorter
# than the spacing despite rounding.
_CELL_SHRINK = 1.0 - 1e-6


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Spread the low 21 bits of uint64 ``x`` to every third bit (for Morton codes)."""
    x = x & np.uint64(0x1FFFFF)
    for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                        (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x


def spatial_order(points: np.ndarray) -> np.ndarray:
    """Permutation putting (N, 3) finite points in Morton (Z-curve) order, 21 bits per axis."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        return np.arange(len(points))
    low = points.min(axis=0)
    extent = float((points.max(axis=0) - low).max())
    scale = (2**21 - 1) / extent if extent > 0 else 0.0
    q = ((points - low) * scale).astype(np.uint64)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << np.uint64(1)) | (_spread_bits(q[:, 2]) << np.uint64(2))
    return np.argsort(code)


def _first_per_cell(points: np.ndarray, cell: float) -> np.ndarray:
    """Indices (into ``points``) of the first point of each occupied cell of edge ``cell``."""
    ijk = np.floor((points - points.min(axis=0)) / cell).astype(np.int64)
    dims = ijk.max(axis=0) + 1
    if float(dims[0]) * float(dims[1]) * float(dims[2]) < 2.0**62:
        key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
        _, first = np.unique(key, return_index=True)
    else:  # an extent too large to pack three cell indices into one int64
        _, first = np.unique(ijk, axis=0, return_index=True)
    return first


def greedy_independent_set(points: np.ndarray, radius: float,
                           priority: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the greedy maximal set of points pairwise at least ``radius`` apart.

    Points are taken in increasing ``priority`` (default: index order), exactly as a
    sequential greedy pass would, but computed in parallel rounds over the conflict graph
    (pairs closer than ``radius``). Callers that want a random order pass a permutation.
    """
    n = len(points)
    if n == 0:
        return np.zeros(0, bool)
    pairs = cKDTree(points).query_pairs(np.nextafter(radius, 0.0), output_type="ndarray")
    # `lo` is the end of each conflict that comes first (and wins).
    if priority is None:
        first = pairs[:, 0] < pairs[:, 1]
    else:
        priority = np.asarray(priority)
        first = priority[pairs[:, 0]] < priority[pairs[:, 1]]
    lo = np.where(first, pairs[:, 0], pairs[:, 1])
    hi = np.where(first, pairs[:, 1], pairs[:, 0])
    undecided = np.ones(n, bool)
    kept = np.zeros(n, bool)
    while len(lo):
        # A point waits while an undecided conflicting point comes before it.
        waiting = np.zeros(n, bool)
        waiting[hi] = True
        decided_now = undecided & ~waiting
        kept |= decided_now
        undecided &= ~decided_now
        undecided[hi[decided_now[lo]]] = False  # conflicts of newly kept points are removed
        live = undecided[lo] & undecided[hi]
        lo, hi = lo[live], hi[live]
    kept |= undecided  # no conflicts left
    return kept


def thin_points(points: np.ndarray, spacing: float, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of a subset of ``points`` thinned to a minimum ``spacing``.

    Args:
        points: (N, 3) coordinates, scene units.
        spacing: minimum distance between kept points, scene units (DTU: 0.2 mm). 0 or
            less keeps everything.
        seed: seed of the random visiting order.

    Returns:
        (M,) int64 indices: kept points are pairwise >= ``spacing`` apart and every
        other point is closer than ``spacing`` to a kept one (see the module docstring).
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if spacing <= 0 or n < 2:
        return np.arange(n, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)  # position in `order` = priority
    shuffled = points[order]
    cell = spacing / np.sqrt(3.0) * _CELL_SHRINK
    kept_parts: list[np.ndarray] = []
    pending = np.arange(n, dtype=np.int64)  # indices into `shuffled`; kept ascending (= priority)
    while len(pending):
        candidates = pending[_first_per_cell(shuffled[pending], cell)]
        candidates = candidates[spatial_order(shuffled[candidates])]
        kept_now = candidates[greedy_independent_set(shuffled[candidates], spacing, candidates)]
        kept_parts.append(kept_now)
        not_candidate = np.ones(len(shuffled), bool)
        not_candidate[candidates] = False
        rest = pending[not_candidate[pending]]
        if not len(rest):
            break
        rest = rest[spatial_order(shuffled[rest])]
        distance, _ = cKDTree(shuffled[kept_now]).query(
            shuffled[rest], distance_upper_bound=spacing, workers=-1
        )
        # Points covered by earlier rounds' kept points already left `pending`.
        pending = np.sort(rest[~(distance < spacing)])  # back to priority order
    return np.sort(order[np.concatenate(kept_parts)])
