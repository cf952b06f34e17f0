"""Depth-map fusion: confidence filter, cross-view geometric consistency, fused coloured cloud.

For each reference view, every pixel's 3D point is projected into each source view, the
source depth is read there (bilinearly) and its point projected back into the reference.
The round trip gives two errors per pixel and source: the reprojection error (pixels between
the pixel and where the source's point lands) and the relative depth error
``|z_back - z| / z``. Which sources *agree* with a pixel, and whether it is kept, depends on
``FusionConfig.consistency``:

``"fixed"`` (the default)
    A source agrees when the reprojection error is below ``reprojection_error`` and the
    relative depth error below ``relative_depth_error``; a pixel is kept when at least
    ``min_consistent_views`` sources agree.

``"dynamic"``
    The dynamic consistency check of D2HC-RMVSNet ("Dense Hybrid Recurrent Multi-view
    Stereo Net with Dynamic Consistency Checking", ECCV 2020): instead of one
    pair of thresholds, a ladder of them. At level n the thresholds are
    ``n * dynamic_reprojection_error`` pixels and ``n * dynamic_relative_depth_error``; a
    pixel is kept when, for some n from ``min_consistent_views`` to the number of sources S,
    at least n sources agree at level n. A pixel seen by few views must be matched tightly
    by all of them; one that many views confirm may be matched more loosely by each, since
    it is unlikely that many views are wrong in the same way. With per-source normalised
    error ``e = max(reprojection / dynamic_reprojection_error, relative /
    dynamic_relative_depth_error)``, a source agrees at level n when ``e < n``, and the
    pixel is kept when the n-th smallest ``e`` is below n for some n. The defaults (0.25 px
    and 1/1300 per level, levels up to the 10 sources) are those of the authors' released
    fusion script; their lowest level is 2: pass ``min_consistent_views=2`` for their rule
    (the default, 1, chosen for the fixed mode, also keeps a pixel that one source matches
    within one step).

Kept pixels become the mean of the reference point and the points of the agreeing sources
(dynamic mode: the sources that agree at the highest level at which the pixel passes, i.e.
exactly those whose agreement kept it; the authors' script averages every source within
the loosest level instead). Colours come from the reference image; optional normals come
from the image-space gradients of the averaged point map (see ``normal_map``).

Arithmetic: the whole round trip is two 3x4 affine maps of "q coordinates"
``q = K X_cam = z * [u, v, 1]`` (composed per view pair in float64 from the cameras, then
rounded to float32), so each pair costs two small matrix products, one bilinear read of
the source (depth and validity together) and a few element-wise float32 operations per
reference pixel with depth. Points are averaged in the reference's q coordinates (an affine
image of world space, so the mean is the same point) and mapped to world once per view.
On a CPU the reference pixels go in bands of 65,536 through all their sources while the
band's temporaries are still in cache, shared out to worker threads that each run
single-threaded PyTorch (``mvs.parallel.run_bands``: no fork/join per operation,
which costs several times the work when other processes compete for the cores). Memory:
the band temporaries (a few MB per worker; dynamic mode: plus 16 bytes per band pixel and
source), the current reference's source maps, up to 256 MB of source maps kept for the
next references (neighbouring views share most sources), and the output arrays, filled in
place.

Results are those of the straightforward per-source world-space computation up to float32
rounding. On a 12-view 1600x1200 synthetic scene with exact depths, 11 of 17.4 M kept
pixels differ from the previous implementation (3 kept only by it, 8 only by this one)
and 0.008 % of the points move by more than 1e-3 scene units (a pixel where one source's
round trip lies within rounding of a threshold, counted on the other side); against a
float64 evaluation of the same rule this implementation differs on 2 pixels, the previous
one on 11. ``tests/test_fusion.py`` checks the round trip and the whole fusion against an
independent float64 implementation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mvs.cameras import Camera
from mvs.data.scene import Scene
from mvs.io.ply import write_point_cloud
from mvs.parallel import run_bands

CONSISTENCY_MODES = ("fixed", "dynamic")

# Camera-frame z at or below which a point counts as behind the camera (as mvs.geometry).
_MIN_DEPTH = 1e-6


@dataclass
class FusionConfig:
    # Photometric filter, ignored when no confidence maps. The shipped checkpoint's final-stage
    # confidence is saturated (median 0.985 at 1600x1200, 0.97 at 640x512 with 5 views), so
    # only a bar close to 1 filters anything. With the default 11 views and one agreeing
    # view, 0.99 against 0.98: held-out synthetic scene at 1600x1200 0.347 against 0.397 mm,
    # at 640x512 0.606 against 0.607 mm, real DTU scan 24 silhouette consistency 98.07%
    # against 97.82% (README, "Fusion settings"). Small depth maps have lower confidences
    # (median 0.90 at 160x128), so such a bar keeps few of their points.
    # A checkpoint of your own may need another bar: benchmarks/fusion_settings.py sweeps it.
    confidence_threshold: float = 0.99
    reprojection_error: float = 1.0  # pixels, at the depth maps' resolution ("fixed" mode)
    relative_depth_error: float = 0.01  # |d_reprojected - d| / d ("fixed" mode)
    min_consistent_views: int = 1  # fixed: agreeing sources needed; dynamic: lowest level
    num_source_views: int = 10
    consistency: str = "fixed"  # "fixed" or "dynamic" (D2HC-RMVSNet's ladder of thresholds)
    dynamic_reprojection_error: float = 0.25  # pixels allowed per agreeing view ("dynamic")
    dynamic_relative_depth_error: float = 1.0 / 1300.0  # relative depth error per agreeing view
    normals: bool = False  # unit normals per point, oriented towards the reference camera
    ply_source_view: bool = False  # also write each point's reference view id into the PLY

    def __post_init__(self) -> None:
        if self.consistency not in CONSISTENCY_MODES:
            raise ValueError(f"consistency must be one of {CONSISTENCY_MODES}, got {self.consistency!r}")
        if self.dynamic_reprojection_error <= 0 or self.dynamic_relative_depth_error <= 0:
            raise ValueError("dynamic_reprojection_error and dynamic_relative_depth_error must be > 0")


@dataclass
class ViewFusionStats:
    view: int
    pixels: int
    with_depth: int
    kept_by_confidence: int
    kept_by_consistency: int


@dataclass
class FusedCloud:
    points: np.ndarray  # (N, 3) float32 world coordinates, scene units
    colors: np.ndarray  # (N, 3) uint8 RGB
    source_view: np.ndarray  # (N,) int32 id of the reference view each point came from
    stats: list[ViewFusionStats]
    normals: np.ndarray | None = None  # (N, 3) float32 unit normals (FusionConfig.normals)

    def stats_dict(self) -> dict:
        return {
            "points": int(len(self.points)),
            "views": [asdict(s) for s in self.stats],
        }

    def write_ply(self, path: str | Path, source_view: bool = False, binary: bool = True) -> None:
        """Write the cloud as PLY: points, colours, normals when present, and with
        ``source_view`` each point's reference view id as an int vertex property."""
        write_point_cloud(path, self.points, self.colors, self.normals, binary=binary,
                          extra={"source_view": self.source_view} if source_view else None)


# ---------------------------------------------------------------------------- pair geometry


def _q_maps(K: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World <-> q coordinates of one view, in float64.

    Args:
        K: (3, 3) intrinsics, E: (4, 4) world-to-camera extrinsics (any float dtype).

    Returns:
        to_q: (3, 4) with ``q = to_q[:, :3] @ X + to_q[:, 3]`` (q = K X_cam = z [u, v, 1]).
        to_world: (3, 4) with ``X = to_world[:, :3] @ q + to_world[:, 3]``.
    """
    K, E = K.detach().cpu().double(), E.detach().cpu().double()
    R, t = E[:3, :3], E[:3, 3]
    to_q = torch.cat([K @ R, (K @ t)[:, None]], 1)
    to_world = torch.cat([R.T @ torch.linalg.inv(K), (-R.T @ t)[:, None]], 1)
    return to_q, to_world


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """(3, 4) affine map ``outer o inner`` of two (3, 4) affine maps."""
    return torch.cat([outer[:, :3] @ inner[:, :3], (outer[:, :3] @ inner[:, 3] + outer[:, 3])[:, None]], 1)


def _grid_normalisation(height: int, width: int) -> torch.Tensor:
    """(3, 3) float64: homogeneous pixel (x, y, 1) of a ``height`` x ``width`` map to its
    ``grid_sample`` coordinates (align_corners=True)."""
    sx, sy = 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)
    return torch.tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


# A bilinear read is trusted only where all four taps hold depth: near an image border or a
# hole it would blend real depth with zeros. The support (the read of the validity mask,
# taps off the image counting as invalid) must be 1 up to this tolerance, so float rounding
# of a coordinate that falls exactly on a pixel row or column does not matter.
_FULL_SUPPORT = 1.0 - 1e-4


def _source_map(depth: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W) source depth (0 = none) and its validity, read by one ``grid_sample``."""
    return torch.stack([depth, (depth > 0).to(depth.dtype)])[None]


@dataclass
class _PairMaps:
    """The two affine maps of one reference/source round trip, (3, 4) float32 on the device.

    ``forward``: reference ``[q; 1]`` -> ``z_s * [gx, gy, 1]``, with z_s the point's depth in
    the source and (gx, gy) the ``grid_sample`` coordinates of its pixel in the source map.
    ``backward``: ``[d * gx, d * gy, d, 1]`` (d the source depth read there) -> reference q
    of the source's point.
    """

    forward: torch.Tensor
    backward: torch.Tensor


def _pair_maps(
    ref_to_q: torch.Tensor, ref_to_world: torch.Tensor, src_K: torch.Tensor, src_E: torch.Tensor,
    src_height: int, src_width: int, device: torch.device | str, dtype: torch.dtype,
) -> _PairMaps:
    """The maps of a reference (``ref_to_q``, ``ref_to_world`` from ``_q_maps``) with a source
    whose camera (``src_K``, ``src_E``) is at the size of its depth map."""
    # Composed in float64 and rounded to float32 once: the per-pixel work sees two 3x4 maps.
    src_to_q, src_to_world = _q_maps(src_K, src_E)
    grid = _grid_normalisation(src_height, src_width)
    forward = grid @ _compose(src_to_q, ref_to_world)
    backward = _compose(ref_to_q, src_to_world)
    backward = torch.cat([backward[:, :3] @ torch.linalg.inv(grid), backward[:, 3:]], 1)
    return _PairMaps(forward.to(device, dtype), backward.to(device, dtype))


class _Reference:
    """Pixels of a reference view that take part in the round trips.

    Attributes:
        q: (4, N) ``[z * u, z * v, z, 1]`` of each pixel (q and a one), z > 0.
        pixels: (2, N) pixel coordinates (u, v).
        depth: (N,) z.
    """

    def __init__(self, index: torch.Tensor, depth: torch.Tensor, width: int):
        """``index``: (N,) flat pixel indices in an image ``width`` wide; ``depth``: (N,) their depth."""
        dtype = depth.dtype
        self.depth = depth
        self.pixels = torch.stack([(index % width).to(dtype), torch.div(index, width, rounding_mode="floor").to(dtype)])
        self.q = torch.ones(4, len(index), dtype=dtype, device=depth.device)
        torch.mul(self.pixels, depth, out=self.q[:2])
        self.q[2] = depth


def _round_trip(
    ref: _Reference, maps: _PairMaps, source: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round trip of reference pixels through one source depth map.

    Args:
        ref: the reference pixels (N of them).
        maps: the pair's affine maps (``_pair_maps``).
        source: (1, 2, Hs, Ws) source depth and validity (``_source_map``).

    Returns:
        ok: (N,) bool, the round trip exists (in front of both cameras, on the source image,
            all four bilinear taps with depth).
        reprojection_sq: (N,) squared pixel distance between pixel and round trip.
        depth_error: (N,) ``|z_back - z|``, scene units.
        q_back: (3, N) the source's point in reference q coordinates (finite everywhere).
    """
    n = ref.q.shape[1]
    g = maps.forward @ ref.q  # (3, N): z_s * [gx, gy, 1]
    z_src = g[2]
    # Points behind the source get a tiny positive divisor; the clamp to +-2 (off the image)
    # keeps their coordinates small, and ``ok`` drops them. Written straight into the
    # (N, 2) layout grid_sample reads.
    z_safe = z_src.clamp_min(_MIN_DEPTH)
    grid = torch.empty(n, 2, dtype=g.dtype, device=g.device)
    torch.div(g[0], z_safe, out=grid[:, 0])
    torch.div(g[1], z_safe, out=grid[:, 1])
    grid.clamp_(-2.0, 2.0)
    sampled = F.grid_sample(source, grid[None, None], mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0, :, 0]  # (2, N): depth, support
    read = sampled[0]
    ok = (z_src > _MIN_DEPTH) & (sampled[1] > _FULL_SUPPORT) & (read > 0)
    h = torch.empty(4, n, dtype=g.dtype, device=g.device)  # [d * gx, d * gy, d, 1]
    torch.mul(grid.T, read, out=h[:2])
    h[2] = read
    h[3] = 1.0
    q_back = maps.backward @ h  # (3, N)
    z_back = q_back[2]
    ok &= z_back > _MIN_DEPTH
    offset = q_back[:2] / z_back.clamp_min(_MIN_DEPTH)
    offset -= ref.pixels
    offset.square_()
    reprojection_sq = offset[0] + offset[1]
    depth_error = (z_back - ref.depth).abs_()
    return ok, reprojection_sq, depth_error, q_back


def consistency_with_source(
    ref_depth: torch.Tensor,
    ref_K: torch.Tensor,
    ref_E: torch.Tensor,
    src_depth: torch.Tensor,
    src_K: torch.Tensor,
    src_E: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-trip check of a reference depth map against one source depth map.

    The arithmetic of ``fuse_depth_maps``, on the full pixel grid.

    Args:
        ref_depth: (H, W) reference depth (0 = none). ref_K (3, 3), ref_E (4, 4).
        src_depth: (Hs, Ws) source depth (0 = none). src_K (3, 3), src_E (4, 4).

    Returns:
        reprojection_error: (H, W) pixels between a pixel and its round trip (inf if none).
        relative_depth_error: (H, W) |z_back - z| / z (inf if none).
        source_points: (H, W, 3) world points of the source depth met on the way (where
            the round trip exists; meaningless elsewhere).
    """
    height, width = ref_depth.shape
    device, dtype = ref_depth.device, ref_depth.dtype
    ref_to_q, ref_to_world = _q_maps(ref_K, ref_E)
    maps = _pair_maps(ref_to_q, ref_to_world, src_K, src_E, *src_depth.shape, device, dtype)
    depth = ref_depth.reshape(-1)
    ref = _Reference(torch.arange(height * width, device=device), depth, width)
    ok, reprojection_sq, depth_error, q_back = _round_trip(ref, maps, _source_map(src_depth))
    ok &= depth > 0
    inf = torch.tensor(float("inf"), device=device, dtype=dtype)
    reprojection = torch.where(ok, reprojection_sq.sqrt(), inf)
    relative = torch.where(ok, depth_error / depth.clamp_min(1e-12), inf)
    to_world = ref_to_world.to(device, dtype)
    world = torch.addmm(to_world[:, 3:], to_world[:, :3], q_back)  # (3, HW)
    return reprojection.reshape(height, width), relative.reshape(height, width), world.T.reshape(height, width, 3)


# ---------------------------------------------------------------------------- normals


def normal_map(points: torch.Tensor, rotation: torch.Tensor | None = None) -> torch.Tensor:
    """Unit surface normals of a camera-frame point map, from its image-space gradients.

    The normal of pixel (u, v) is X_u x X_v, the cross product of the map's derivatives
    along u and v (exact for a plane, whatever the camera). Per axis the derivative is the
    difference to the neighbour (left/right, up/down) whose depth is closer to the pixel's
    own, so a depth edge does not bend the normals of the surfaces on either side;
    neighbours without depth are never used. A pixel with no neighbour with depth along an
    axis gets the unit vector towards the camera.

    Args:
        points: (H, W, 3) camera-frame points X (z = X[..., 2] = 0 where there is none).
        rotation: (3, 3) world-to-camera rotation R to return world-frame normals (R^T n),
            or None for camera-frame normals.

    Returns:
        (H, W, 3) unit normals n facing the camera: n . (0 - X) > 0 in the camera frame
        (zero where there is no depth).
    """
    depth = points[..., 2]
    missing = depth <= 0

    def derivative(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        # step[i] = X[i+1] - X[i] along ``dim``, padded so that index i of the padded arrays
        # is the step before pixel i and index i + 1 the step after it. A step to a pixel
        # without depth, or off the image, is an infinite jump in depth.
        size = depth.shape[dim]
        step = torch.diff(points, dim=dim)
        gap = missing.narrow(dim, 1, size - 1) | missing.narrow(dim, 0, size - 1)
        jump = step[..., 2].abs().masked_fill_(gap, float("inf"))
        pad_shape = list(depth.shape)
        pad_shape[dim] = 1
        inf = torch.full(pad_shape, float("inf"), dtype=depth.dtype, device=depth.device)
        zeros = torch.zeros(pad_shape + [3], dtype=points.dtype, device=points.device)
        step = torch.cat([zeros, step, zeros], dim)
        jump = torch.cat([inf, jump, inf], dim)
        after, before = jump.narrow(dim, 1, size), jump.narrow(dim, 0, size)
        chosen = torch.where((after <= before)[..., None], step.narrow(dim, 1, size), step.narrow(dim, 0, size))
        return chosen, torch.isfinite(torch.minimum(after, before))

    along_u, has_u = derivative(1)
    along_v, has_v = derivative(0)
    normals = torch.linalg.cross(along_u, along_v, dim=-1)
    usable = has_u & has_v & (torch.linalg.vector_norm(normals, dim=-1) > 0)
    normals = torch.where(usable[..., None], normals, -points)
    normals = torch.where(((normals * points).sum(-1) > 0)[..., None], -normals, normals)
    normals = normals / torch.linalg.vector_norm(normals, dim=-1, keepdim=True).clamp_min(1e-30)  # 0 if no depth
    if rotation is not None:
        normals = normals @ rotation.to(points.device, points.dtype)  # rows: (R^T n)^T = n^T R
    return normals


def _banded_normal_map(points: torch.Tensor, rotation: torch.Tensor, on_cpu: bool) -> torch.Tensor:
    """``normal_map`` in bands of rows (with one row of context above and below), shared out
    to the CPU's cores like the round trips; one piece on a GPU."""
    height, width = points.shape[:2]
    out = torch.empty_like(points)

    def band(top: int, bottom: int) -> None:
        lo, hi = max(top - 1, 0), min(bottom + 1, height)
        out[top:bottom] = normal_map(points[lo:hi], rotation)[top - lo: top - lo + bottom - top]

    rows = max(1, _BAND_PIXELS // max(width, 1)) if on_cpu else max(height, 1)
    run_bands(band, [(top, min(top + rows, height)) for top in range(0, height, rows)])
    return out


# ---------------------------------------------------------------------------- fusion


def _dynamic_selection(
    normalised: torch.Tensor, lowest_level: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dynamic check's decision from per-source normalised errors.

    Args:
        normalised: (S, N) ``max(reprojection / pixel_step, relative / relative_step)`` per
            source and pixel (inf where the round trip does not exist).
        lowest_level: the smallest number of agreeing sources a pixel may be kept with.

    Returns:
        kept: (N,) bool, for some level n in [lowest_level, S] at least n sources have error < n.
        agreeing: (S, N) bool, the sources with error below the pixel's highest passing level
            (all False for pixels not kept).
    """
    sources, n = normalised.shape
    best_level = torch.zeros(n, dtype=normalised.dtype, device=normalised.device)
    for level in range(max(lowest_level, 1), sources + 1):
        passes = (normalised < level).sum(0) >= level
        best_level = torch.where(passes, torch.full_like(best_level, level), best_level)
    kept = best_level > 0
    return kept, normalised < best_level  # best_level 0 (not kept): no error is below 0


def _fuse_band(
    ref: _Reference, pairs: list[tuple[_PairMaps, torch.Tensor]], config: FusionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Consistency test and averaging of some reference pixels against every source.

    Args:
        ref: the pixels (N of them).
        pairs: per source, its ``_PairMaps`` and depth map (``_source_map``).
        config: thresholds and consistency mode.

    Returns:
        kept: (N,) bool.
        mean_q: (3, N) mean of the reference point and the agreeing sources' points, in
            reference q coordinates.
    """
    n = ref.q.shape[1]
    point_sum = ref.q[:3].clone()  # the reference point itself is part of every mean
    if config.consistency == "dynamic":
        errors, points = [], []
        for maps, source in pairs:
            ok, reprojection_sq, depth_error, q_back = _round_trip(ref, maps, source)
            normalised = torch.maximum(
                reprojection_sq.sqrt_().div_(config.dynamic_reprojection_error),
                depth_error.div_(ref.depth).div_(config.dynamic_relative_depth_error),
            )
            errors.append(normalised.masked_fill_(~ok, float("inf")))
            points.append(q_back)
        if not pairs:
            return torch.zeros(n, dtype=torch.bool, device=point_sum.device), point_sum
        kept, agreeing = _dynamic_selection(torch.stack(errors), config.min_consistent_views)
        count = agreeing.sum(0)
        for q_back, agree in zip(points, agreeing, strict=True):
            point_sum += q_back.mul_(agree)
    else:
        count = torch.zeros(n, dtype=point_sum.dtype, device=point_sum.device)
        # The tests reprojection < limit and relative error < limit, without the square
        # root and the division.
        max_reprojection_sq = config.reprojection_error**2
        depth_tolerance = config.relative_depth_error * ref.depth
        for maps, source in pairs:
            ok, reprojection_sq, depth_error, q_back = _round_trip(ref, maps, source)
            agree = ok & (reprojection_sq < max_reprojection_sq) & (depth_error < depth_tolerance)
            count += agree
            point_sum += q_back.mul_(agree)
        kept = count >= config.min_consistent_views
    return kept, point_sum.div_(count + 1)


def _fuse_reference(
    index: torch.Tensor, depth: torch.Tensor, width: int, pairs: list[tuple[_PairMaps, torch.Tensor]],
    config: FusionConfig, on_cpu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_fuse_band`` over all pixels of a reference: (N,) flat ``index`` in an image ``width``
    wide with (N,) ``depth``; returns (N,) kept and (3, N) mean q.

    A GPU takes all pixels at once; a CPU works in bands shared out to its cores.
    """
    n = len(index)
    kept = torch.empty(n, dtype=torch.bool, device=depth.device)
    mean_q = torch.empty(3, n, dtype=depth.dtype, device=depth.device)

    def band(start: int, stop: int) -> None:
        pixels = _Reference(index[start:stop], depth[start:stop], width)
        kept[start:stop], mean_q[:, start:stop] = _fuse_band(pixels, pairs, config)

    size = _BAND_PIXELS if on_cpu else max(n, 1)
    run_bands(band, [(start, min(start + size, n)) for start in range(0, n, size)])
    return kept, mean_q


# Reference pixels per band on a CPU. Bands run in ``run_bands``' worker threads, each with
# single-threaded PyTorch: a per-operation fork/join across cores costs little on an idle
# machine but several times the work when another process competes for the cores. A band's
# temporaries (~100 bytes per pixel and source in flight) stay a few tens of MB.
_BAND_PIXELS = 1 << 16


# Source maps (``_source_map``) kept between references: neighbouring views share most of
# their sources, so holding 256 MB of them (16 at 1600x1200) spares about three rebuilds in four.
_SOURCE_CACHE_BYTES = 256 << 20


class _SourceCache:
    """The most recently used source maps (``_source_map``) by view id, within a byte budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.maps: OrderedDict[int, torch.Tensor] = OrderedDict()

    def get(self, view: int, depth: np.ndarray, device: torch.device | str) -> torch.Tensor:
        """The map of ``view``, built from its (H, W) ``depth`` when not held."""
        if view in self.maps:
            self.maps.move_to_end(view)
            return self.maps[view]
        built = _source_map(torch.as_tensor(depth, device=device))
        self.maps[view] = built
        size = built.numel() * built.element_size()
        while len(self.maps) > max(1, self.budget // size):
            self.maps.popitem(last=False)
        return built


def fuse_depth_maps(
    scene: Scene,
    depths: Mapping[int, np.ndarray],
    confidences: Mapping[int, np.ndarray] | None = None,
    config: FusionConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FusedCloud:
    """Fuse per-view depth maps of ``scene`` into one coloured point cloud.

    Args:
        scene: cameras, images and view selection.
        depths: view id -> (h, w) depth (0 = none), at any resolution (cameras are rescaled).
        confidences: view id -> (h, w) confidence in [0, 1], or None.
        config: thresholds, consistency mode, normals.
        device: where the arithmetic runs (a GPU when present).

    Returns:
        The cloud: float32 points, uint8 colours, int32 reference view per point, per-view
        counts, and float32 unit normals when ``config.normals``.
    """
    config = config or FusionConfig()
    dtype = torch.float32
    views = [v for v in scene.view_ids if v in depths]
    on_cpu = torch.device(device).type == "cpu"

    def camera_at(view_id: int, depth: np.ndarray) -> Camera:
        return scene.views[view_id].camera.resized(depth.shape[1], depth.shape[0])

    source_maps = _SourceCache(_SOURCE_CACHE_BYTES)
    # The cloud is written straight into arrays sized for every pixel of every view (address
    # space only: pages never written are never resident) and returned as slices, so the
    # points exist once, not once per view and once more concatenated.
    capacity = sum(int(np.prod(np.shape(depths[v]))) for v in views)
    cloud_points = np.empty((capacity, 3), np.float32)
    cloud_colors = np.empty((capacity, 3), np.uint8)
    cloud_views = np.empty(capacity, np.int32)
    cloud_normals = np.empty((capacity, 3), np.float32) if config.normals else None
    filled, stats = 0, []
    for ref in tqdm(views, desc="fusing", unit="view", disable=not progress):
        depth_np = np.asarray(depths[ref], dtype=np.float32)
        height, width = depth_np.shape
        camera = camera_at(ref, depth_np)
        ref_depth = torch.as_tensor(depth_np, device=device).reshape(-1)
        has_depth = ref_depth > 0
        keep = has_depth
        if confidences is not None and ref in confidences:
            confidence = torch.as_tensor(np.asarray(confidences[ref], np.float32), device=device).reshape(-1)
            keep = keep & (confidence >= config.confidence_threshold)
        # Only pixels that passed the photometric filter take part from here on.
        index = torch.nonzero(keep).squeeze(1)  # (N,) flat pixel indices
        n = len(index)
        ref_to_q, ref_to_world = _q_maps(camera.intrinsics_tensor(dtype=torch.float64),
                                         camera.extrinsics_tensor(dtype=torch.float64))

        sources = [s for s in scene.source_views(ref) if s in depths][: config.num_source_views]
        if len(sources) < config.min_consistent_views or n == 0:
            sources = []  # no pixel can gather enough agreeing views: skip the round trips
        pairs = []
        for src in sources:
            src_np = np.asarray(depths[src], dtype=np.float32)
            src_camera = camera_at(src, src_np)
            maps = _pair_maps(ref_to_q, ref_to_world, src_camera.intrinsics_tensor(dtype=torch.float64),
                              src_camera.extrinsics_tensor(dtype=torch.float64), *src_np.shape, device, dtype)
            pairs.append((maps, source_maps.get(src, src_np, device)))
        kept, mean_q = _fuse_reference(index, ref_depth[index], width, pairs, config, on_cpu)
        del pairs
        to_world = ref_to_world.to(device, dtype)
        kept_positions = torch.nonzero(kept).squeeze(1)  # (K,) among the N pixels
        kept_index = index[kept_positions]
        size = len(kept_index)
        where = slice(filled, filled + size)
        mean_kept = torch.index_select(mean_q, 1, kept_positions)  # (3, K)
        torch.from_numpy(cloud_points[where]).copy_(torch.addmm(to_world[:, 3], mean_kept.T, to_world[:, :3].T))
        if config.normals:
            # From the averaged points of every pixel with depth (kept or not: all are
            # neighbours), i.e. the fused surface as seen from this view, in camera frame.
            to_camera = torch.linalg.inv(camera.intrinsics_tensor(dtype=torch.float64)).to(device, dtype)
            point_map = torch.zeros(height * width, 3, device=device, dtype=dtype)
            point_map[index] = (to_camera @ mean_q).T
            normals = _banded_normal_map(point_map.reshape(height, width, 3),
                                         camera.extrinsics_tensor(device, dtype)[:3, :3], on_cpu)
            torch.from_numpy(cloud_normals[where]).copy_(normals.reshape(-1, 3)[kept_index])

        image = scene.image(ref)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        np.take(image.reshape(-1, 3), kept_index.cpu().numpy(), axis=0, out=cloud_colors[where], mode="clip")
        cloud_views[where] = ref
        filled += size
        stats.append(ViewFusionStats(ref, height * width, int(has_depth.sum()), n, size))
    return FusedCloud(
        cloud_points[:filled], cloud_colors[:filled], cloud_views[:filled], stats,
        cloud_normals[:filled] if config.normals else None,
    )
