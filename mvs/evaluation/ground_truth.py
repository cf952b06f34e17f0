"""Ground truth for point-cloud evaluation: reference points, observation mask, ground plane.

Two sources:

* the synthetic generator's scene folder: ``gt_points.ply`` (surface samples about 0.2 mm
  apart, in mm). Its observation mask is built here (:meth:`ObservationMask.from_points`):
  the voxels of edge ``voxel_size`` that hold a GT point, dilated so that every voxel
  whose centre lies within ``margin`` of an occupied voxel's centre counts as observed.
  The ground plane is z = 0 with +z up unless ``scene.json`` gives ``ground_plane``.
  The GT holds only a patch of the table (the part near the objects) while the table in
  the images goes on beyond it, so ground points within ``margin`` of the patch's outer
  edge do not seed the mask (:func:`ground_patch_interior`): dilated from every GT point,
  the mask would reach ``margin`` past the edge, where correctly reconstructed table lies
  up to ``margin`` from any GT point and would count as error. (Exact depth maps of the
  demo's scene, fused, scored an accuracy of 0.57 mm with the mask dilated from every GT
  point, 0.26 mm with this rule; GT spacing 0.5 mm.)
* the official DTU evaluation files (``dtu_root`` holding ``Points/`` and ``ObsMask/``):
  ``Points/stl/stl{scan:03d}_total.ply``, ``ObsMask/ObsMask{scan}_10.mat`` (``ObsMask``
  3-D logical, ``BB`` 2x3 bounding box [min; max], ``Res`` voxel size) and
  ``ObsMask/Plane{scan}.mat`` (``P``, the 4-vector plane).

Conventions shared by both (those of the DTU MATLAB files): a point ``p`` falls in voxel
``round((p - BB[0]) / Res)`` (0-based here, MATLAB adds one), rounding halves up; the
point is observed when that index lies inside the grid and the voxel is set. A plane
(a, b, c, d) puts ``p`` above it when ``a*x + b*y + c*z + d > 0`` (strictly: points on
the plane, e.g. the synthetic table at z = 0, are not above it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.io import loadmat

from mvs.errors import MVSInputError
from mvs.io import read_point_cloud

log = logging.getLogger(__name__)

# Synthetic observation-mask defaults (mm): 1 mm voxels dilated by 5 mm.
SYNTHETIC_VOXEL_SIZE = 1.0
SYNTHETIC_MASK_MARGIN = 5.0
SYNTHETIC_GROUND_PLANE = (0.0, 0.0, 1.0, 0.0)  # z = 0, +z up
# Above this many voxels the synthetic grid is coarsened (memory of the distance transform).
MAX_MASK_VOXELS = 64_000_000


@dataclass
class ObservationMask:
    """A voxelised observed volume (DTU's ``ObsMask``).

    Attributes:
        grid: (X, Y, Z) bool, indexed [ix, iy, iz].
        origin: (3,) world position of the centre of voxel (0, 0, 0) (DTU's ``BB[0]``).
        resolution: voxel edge, scene units (DTU's ``Res``).
    """

    grid: np.ndarray
    origin: np.ndarray
    resolution: float

    def __post_init__(self) -> None:
        self.grid = np.asarray(self.grid, dtype=bool)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        self.resolution = float(self.resolution)
        if self.grid.ndim != 3:
            raise ValueError(f"observation mask must be 3-D, got shape {self.grid.shape}")
        if not self.resolution > 0:
            raise ValueError(f"observation mask resolution must be > 0, got {self.resolution}")

    def voxel_index(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) int64 voxel indices of ``points`` (may fall outside the grid)."""
        scaled = (np.asarray(points, dtype=np.float64) - self.origin) / self.resolution
        return np.floor(scaled + 0.5).astype(np.int64)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: points inside the grid whose voxel is observed."""
        index = self.voxel_index(points)
        inside = np.all((index >= 0) & (index < np.array(self.grid.shape)), axis=1)
        result = np.zeros(len(index), bool)
        i = index[inside]
        result[inside] = self.grid[i[:, 0], i[:, 1], i[:, 2]]
        return result

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) corners of the grid's volume."""
        half = 0.5 * self.resolution
        return self.origin - half, self.origin + (np.array(self.grid.shape) - 0.5) * self.resolution

    @classmethod
    def from_points(
        cls,
        points: np.ndarray,
        voxel_size: float = SYNTHETIC_VOXEL_SIZE,
        margin: float = SYNTHETIC_MASK_MARGIN,
        max_voxels: int = MAX_MASK_VOXELS,
    ) -> ObservationMask:
        """Voxels holding a point, dilated: observed = voxel centre within ``margin`` of an
        occupied voxel's centre (Euclidean distance transform).

        ``voxel_size`` grows (with a log warning) when the grid would exceed ``max_voxels``.
        """
        points = np.asarray(points, dtype=np.float64)
        if len(points) == 0:
            raise ValueError("cannot build an observation mask from no points")
        low, high = points.min(axis=0), points.max(axis=0)
        extent = high - low + 2 * margin
        pad = int(np.ceil(margin / voxel_size)) + 1
        count = np.prod(np.ceil(extent / voxel_size) + 3)
        if count > max_voxels:
            new_size = voxel_size * float((count / max_voxels) ** (1 / 3)) * 1.01
            log.warning("observation mask: %.0f voxels of %g; using %g voxels instead",
                        count, voxel_size, new_size)
            voxel_size = new_size
            pad = int(np.ceil(margin / voxel_size)) + 1
        origin = low - pad * voxel_size
        shape = tuple(int(s) for s in np.floor((high - origin) / voxel_size + 0.5).astype(int) + pad + 1)
        occupied = np.zeros(shape, bool)
        mask = cls(occupied, origin, voxel_size)
        index = mask.voxel_index(points)
        occupied[index[:, 0], index[:, 1], index[:, 2]] = True
        if margin > 0:
            distance = ndimage.distance_transform_edt(~occupied, sampling=voxel_size)
            mask.grid = distance <= margin
        return mask

    @classmethod
    def from_mat(cls, path: str | Path) -> ObservationMask:
        """Read DTU's ``ObsMask{scan}_10.mat`` (fields ``ObsMask``, ``BB``, ``Res``)."""
        content = _load_mat(path, ("ObsMask", "BB", "Res"))
        grid = np.asarray(content["ObsMask"]).astype(bool)
        bb = np.asarray(content["BB"], dtype=np.float64)
        if grid.ndim != 3:
            raise MVSInputError(f"ObsMask must be a 3-D array, got shape {grid.shape}", path)
        if bb.shape != (2, 3):
            raise MVSInputError(f"BB must be 2x3 ([min; max]), got shape {bb.shape}", path)
        res = float(np.asarray(content["Res"], dtype=np.float64).reshape(-1)[0])
        if not res > 0:
            raise MVSInputError(f"Res must be > 0, got {res}", path)
        return cls(grid, bb[0], res)


def _load_mat(path: str | Path, fields: tuple[str, ...]) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MVSInputError("file not found", path)
    try:
        content = loadmat(str(path))
    except Exception as error:  # scipy raises several types for corrupt files
        raise MVSInputError(f"not a readable MATLAB file ({error})", path) from None
    missing = [f for f in fields if f not in content]
    if missing:
        raise MVSInputError(f"missing field(s) {', '.join(missing)}", path)
    return content


def read_plane_mat(path: str | Path) -> np.ndarray:
    """DTU's ``Plane{scan}.mat``: the (4,) plane ``P`` (above: P . [x y z 1] > 0)."""
    plane = np.asarray(_load_mat(path, ("P",))["P"], dtype=np.float64).reshape(-1)
    if plane.shape != (4,) or not np.all(np.isfinite(plane)):
        raise MVSInputError(f"P must be 4 finite numbers, got {plane.tolist()}", path)
    return plane


def points_on_plane(points: np.ndarray, plane: np.ndarray, tolerance: float) -> np.ndarray:
    """(N,) bool: ``points`` (N, 3) within ``tolerance`` of ``plane`` (a, b, c, d)."""
    plane = np.asarray(plane, dtype=np.float64)
    scale = np.linalg.norm(plane[:3])
    return np.abs(np.asarray(points, dtype=np.float64) @ (plane[:3] / scale) + plane[3] / scale) <= tolerance


def ground_patch_interior(points: np.ndarray, plane: np.ndarray, margin: float, cell: float) -> np.ndarray:
    """(N,) bool: points on ``plane`` lying more than ``margin`` inside the outer edge of the
    patch of the plane that those points cover (holes in the patch, e.g. under objects, do
    not count as edges); points off the plane are False.

    Args:
        points: (N, 3) scene units.
        plane: (4,) a, b, c, d; a point is on it within 1e-3 * ``cell``.
        margin: distance from the edge, scene units.
        cell: raster cell of the patch; at least the points' spacing (gaps of one cell
            between points are closed).
    """
    points = np.asarray(points, dtype=np.float64)
    normal = np.asarray(plane[:3], dtype=np.float64) / np.linalg.norm(plane[:3])
    on_plane = points_on_plane(points, plane, 1e-3 * cell)
    result = np.zeros(len(points), bool)
    if not on_plane.any():
        return result
    u = np.cross(normal, [1.0, 0, 0] if abs(normal[0]) < 0.9 else [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    uv = points[on_plane] @ np.stack([u, v], axis=1)  # (M, 2) plane coordinates
    pad = 2
    index = np.floor((uv - uv.min(axis=0)) / cell).astype(np.int64) + pad
    patch = np.zeros(tuple(index.max(axis=0) + pad + 1), bool)
    patch[index[:, 0], index[:, 1]] = True
    patch = ndimage.binary_fill_holes(ndimage.binary_closing(patch, iterations=1))
    inside = ndimage.distance_transform_edt(patch, sampling=cell) > margin
    result[np.flatnonzero(on_plane)] = inside[index[:, 0], index[:, 1]]
    return result


@dataclass
class GroundTruth:
    """Reference points for point-cloud evaluation.

    Attributes:
        points: (N, 3) float64, scene units.
        obs_mask: prediction points outside it are not scored for accuracy (None: all are).
        plane: (4,) ground plane; only GT points above it count for completeness (None: all).
        colors: (N, 3) uint8 or None.
        name: what it is, for reports.
    """

    points: np.ndarray
    obs_mask: ObservationMask | None = None
    plane: np.ndarray | None = None
    colors: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        if self.plane is not None:
            self.plane = np.asarray(self.plane, dtype=np.float64).reshape(4)
            if not np.any(self.plane[:3]):
                raise ValueError("ground plane normal (a, b, c) must not be zero")

    def above_plane(self, points: np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: points (default: the GT points) strictly above the ground plane."""
        points = self.points if points is None else np.asarray(points, dtype=np.float64)
        if self.plane is None:
            return np.ones(len(points), bool)
        return points @ self.plane[:3] + self.plane[3] > 0

    @classmethod
    def from_synthetic_scene(
        cls,
        scene_dir: str | Path,
        voxel_size: float = SYNTHETIC_VOXEL_SIZE,
        margin: float = SYNTHETIC_MASK_MARGIN,
        plane: tuple[float, float, float, float] | None = None,
    ) -> GroundTruth:
        """``scene_dir/gt_points.ply`` with an observation mask built from it.

        Args:
            voxel_size, margin: observation-mask voxel edge and dilation, scene units
                (mm for the generator's scenes).
            plane: ground plane; default ``scene.json``'s ``ground_plane`` if it has one,
                else z = 0 with +z up (the table, exactly at z = 0, is then not counted
                for completeness, like DTU's table below its plane).
        """
        scene_dir = Path(scene_dir)
        path = scene_dir / "gt_points.ply"
        if not path.is_file():
            raise MVSInputError("no gt_points.ply: not a synthetic scene with ground truth", path)
        points, colors = read_point_cloud(path)
        if len(points) == 0:
            raise MVSInputError("ground-truth point cloud is empty", path)
        meta, meta_path = {}, scene_dir / "scene.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as error:
                raise MVSInputError(f"not valid JSON ({error})", meta_path) from None
            meta = meta if isinstance(meta, dict) else {}
        units = meta.get("units")
        if units not in (None, "mm") and (voxel_size, margin) == (SYNTHETIC_VOXEL_SIZE, SYNTHETIC_MASK_MARGIN):
            log.warning("%s: units are %r but the observation-mask defaults are in mm "
                        "(voxel %g, margin %g); pass voxel_size and margin",
                        meta_path, units, voxel_size, margin)
        if plane is None:
            plane = meta.get("ground_plane") or SYNTHETIC_GROUND_PLANE
            try:
                plane = tuple(float(v) for v in plane)
            except (TypeError, ValueError):
                plane = ()
            if len(plane) != 4:
                raise MVSInputError("ground_plane must be 4 numbers (a, b, c, d)", meta_path)
        plane = np.array(plane, dtype=np.float64)
        seeds = points
        if margin > 0:
            spacing = meta.get("config", {}).get("gt_spacing") if isinstance(meta.get("config"), dict) else None
            cell = max(voxel_size, 2.0 * float(spacing)) if isinstance(spacing, (int, float)) else voxel_size
            edge = points_on_plane(points, plane, 1e-3 * cell) & ~ground_patch_interior(points, plane, margin, cell)
            seeds = points[~edge]
            seeds = points if len(seeds) == 0 else seeds
        return cls(points, ObservationMask.from_points(seeds, voxel_size, margin), plane,
                   colors, name=f"synthetic {scene_dir.name}")

    @classmethod
    def from_dtu(cls, dtu_root: str | Path, scan: int) -> GroundTruth:
        """Official DTU ground truth of ``scan`` under ``dtu_root`` (``Points/``, ``ObsMask/``)."""
        root = Path(dtu_root)
        stl = root / "Points" / "stl" / f"stl{scan:03d}_total.ply"
        if not stl.is_file():
            raise MVSInputError(
                "DTU ground-truth points not found (expected Points/stl/stlNNN_total.ply)", stl
            )
        points, colors = read_point_cloud(stl)
        if len(points) == 0:
            raise MVSInputError("ground-truth point cloud is empty", stl)
        mask = ObservationMask.from_mat(root / "ObsMask" / f"ObsMask{scan}_10.mat")
        plane = read_plane_mat(root / "ObsMask" / f"Plane{scan}.mat")
        return cls(points, mask, plane, colors, name=f"DTU scan{scan}")
