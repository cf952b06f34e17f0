"""PLY point clouds through open3d (binary by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvs._open3d import open3d
from mvs.errors import MVSInputError


def to_open3d(points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None):
    """An ``open3d.geometry.PointCloud`` from (N, 3) points, (N, 3) colours, (N, 3) normals.

    Colours may be uint8 (0..255) or float (0..1).
    """
    o3d = open3d()
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype == np.uint8:
            colors = colors.astype(np.float64) / 255.0
        cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64).reshape(-1, 3))
    if normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=np.float64).reshape(-1, 3))
    return cloud


def write_point_cloud(
    path: str | Path,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    binary: bool = True,
) -> None:
    """Write (N, 3) points with optional (N, 3) colours and normals as PLY."""
    o3d = open3d()
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    for name, extra in (("colors", colors), ("normals", normals)):
        if extra is not None and np.asarray(extra).shape != points.shape:
            raise ValueError(f"{name} must match points {points.shape}, got {np.asarray(extra).shape}")
    if len(points) == 0:
        # open3d refuses to write an empty cloud; an empty result (e.g. every depth
        # filtered out) is still a valid answer, so write the header alone.
        _write_empty_ply(Path(path), colors is not None, normals is not None, binary)
        return
    cloud = to_open3d(points, colors, normals)
    if not o3d.io.write_point_cloud(str(path), cloud, write_ascii=not binary):
        raise OSError(f"{path}: could not write point cloud")


def _write_empty_ply(path: Path, colors: bool, normals: bool, binary: bool) -> None:
    properties = ["property double x", "property double y", "property double z"]
    if normals:
        properties += ["property double nx", "property double ny", "property double nz"]
    if colors:
        properties += ["property uchar red", "property uchar green", "property uchar blue"]
    encoding = "binary_little_endian" if binary else "ascii"
    header = ["ply", f"format {encoding} 1.0", "element vertex 0", *properties, "end_header"]
    path.write_text("\n".join(header) + "\n")


def read_point_cloud(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PLY. Returns (N, 3) float64 points and (N, 3) uint8 colours (or None)."""
    o3d = open3d()
    path = Path(path)
    if not path.is_file():
        raise MVSInputError("point cloud not found", path)
    head = path.read_bytes()[:4096]
    if head.startswith(b"ply") and b"element vertex 0\n" in head.split(b"end_header")[0]:
        has_colors = b"property uchar red" in head
        return np.zeros((0, 3)), (np.zeros((0, 3), np.uint8) if has_colors else None)
    cloud = o3d.io.read_point_cloud(str(path), format="ply")
    points = np.asarray(cloud.points)
    if len(points) == 0 and path.stat().st_size > 0:
        header = path.read_bytes()[:3]
        if header != b"ply":
            raise MVSInputError("not a PLY file", path)
    colors = None
    if cloud.has_colors():
        colors = np.clip(np.round(np.asarray(cloud.colors) * 255.0), 0, 255).astype(np.uint8)
    return points, colors
