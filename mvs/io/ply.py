"""PLY point clouds through open3d (binary by default).

Points, colours and normals go through open3d's classic writer. Extra per-vertex
properties (e.g. the fused cloud's ``source_view``) go through its tensor writer
(``open3d.t.io``), which writes the same header (x, y, z and normals as double, colours as
uchar) followed by the extra properties; readers that do not know them skip them.
"""

from __future__ import annotations

from collections.abc import Mapping
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


# PLY type names of the dtypes an extra vertex property may have.
_PLY_TYPES = {
    np.dtype(np.int8): "char", np.dtype(np.uint8): "uchar", np.dtype(np.int16): "short",
    np.dtype(np.uint16): "ushort", np.dtype(np.int32): "int", np.dtype(np.uint32): "uint",
    np.dtype(np.float32): "float", np.dtype(np.float64): "double",
}
_RESERVED = {"x", "y", "z", "nx", "ny", "nz", "red", "green", "blue", "positions", "colors", "normals"}


def write_point_cloud(
    path: str | Path,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    binary: bool = True,
    extra: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write (N, 3) points with optional (N, 3) colours and normals as PLY.

    Args:
        extra: further vertex properties, name -> (N,) array of one of the PLY types (int8 to
            uint32, float32, float64), written after the standard ones, e.g.
            ``{"source_view": int32 ids}``.
    """
    o3d = open3d()
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    for name, values in (("colors", colors), ("normals", normals)):
        if values is not None and np.asarray(values).shape != points.shape:
            raise ValueError(f"{name} must match points {points.shape}, got {np.asarray(values).shape}")
    extra = {name: np.asarray(values) for name, values in (extra or {}).items()}
    for name, values in extra.items():
        if not name.isidentifier() or name in _RESERVED:
            raise ValueError(f"extra property name {name!r} is not allowed")
        if values.shape != (len(points),):
            raise ValueError(f"extra property {name!r} must be ({len(points)},), got {values.shape}")
        if values.dtype not in _PLY_TYPES:
            raise ValueError(f"extra property {name!r}: dtype {values.dtype} has no PLY type")
    if len(points) == 0:
        # open3d refuses to write an empty cloud; an empty result (e.g. every depth
        # filtered out) is still a valid answer, so write the header alone.
        _write_empty_ply(Path(path), colors is not None, normals is not None, binary,
                         {name: values.dtype for name, values in extra.items()})
        return
    if extra:
        ok = o3d.t.io.write_point_cloud(str(path), _to_open3d_tensor(points, colors, normals, extra),
                                        write_ascii=not binary)
    else:
        ok = o3d.io.write_point_cloud(str(path), to_open3d(points, colors, normals), write_ascii=not binary)
    if not ok:
        raise OSError(f"{path}: could not write point cloud")


def _to_open3d_tensor(points: np.ndarray, colors: np.ndarray | None, normals: np.ndarray | None,
                      extra: Mapping[str, np.ndarray]):
    """An ``open3d.t.geometry.PointCloud`` with the types the classic writer uses: points and
    normals float64, colours uint8 (floats in [0, 1] are scaled and rounded)."""
    o3d = open3d()
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float64))
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8:
            colors = np.clip(np.round(colors.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        cloud.point.colors = o3d.core.Tensor(np.ascontiguousarray(colors))
    if normals is not None:
        cloud.point.normals = o3d.core.Tensor(np.ascontiguousarray(normals, dtype=np.float64))
    for name, values in extra.items():
        setattr(cloud.point, name, o3d.core.Tensor(np.ascontiguousarray(values)[:, None]))
    return cloud


def _write_empty_ply(path: Path, colors: bool, normals: bool, binary: bool,
                     extra: Mapping[str, np.dtype] | None = None) -> None:
    properties = ["property double x", "property double y", "property double z"]
    if normals:
        properties += ["property double nx", "property double ny", "property double nz"]
    if colors:
        properties += ["property uchar red", "property uchar green", "property uchar blue"]
    properties += [f"property {_PLY_TYPES[dtype]} {name}" for name, dtype in (extra or {}).items()]
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


def read_point_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """Every vertex property of a PLY: ``positions`` (N, 3) float64, ``colors`` (N, 3) uint8,
    ``normals`` (N, 3) float64 where present, and any other property as an (N,) array of
    its own type (e.g. ``source_view``)."""
    o3d = open3d()
    path = Path(path)
    if not path.is_file():
        raise MVSInputError("point cloud not found", path)
    if path.read_bytes()[:3] != b"ply":
        raise MVSInputError("not a PLY file", path)
    head = path.read_bytes()[:4096].split(b"end_header")[0]
    if b"element vertex 0\n" in head:
        # open3d reads no attributes from an empty cloud: take the names from the header.
        inverse = {name: dtype for dtype, name in _PLY_TYPES.items()}
        result: dict[str, np.ndarray] = {"positions": np.zeros((0, 3))}
        for line in head.decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "property" and parts[2] not in _RESERVED:
                result[parts[2]] = np.zeros(0, inverse.get(parts[1], np.float64))
        if b"property uchar red" in head:
            result["colors"] = np.zeros((0, 3), np.uint8)
        if b"property double nx" in head or b"property float nx" in head:
            result["normals"] = np.zeros((0, 3))
        return result
    cloud = o3d.t.io.read_point_cloud(str(path))
    result = {}
    for name in cloud.point:
        values = cloud.point[name].numpy()
        result[name] = values if name in ("positions", "colors", "normals") else values.reshape(-1)
    if "positions" in result:
        result["positions"] = result["positions"].astype(np.float64, copy=False)
    return result
