"""Object meshes: open3d primitives, deformed and combined, as plain numpy arrays.

Every builder returns a :class:`Shape` in object coordinates: millimetres, z up, the
footprint centred on the origin and the lowest point at z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvs._open3d import open3d

# Kinds drawn for ordinary objects, and the "thin structure" hard case.
SOLID_KINDS = ("blob", "box", "twisted_box", "cylinder", "cone", "torus", "house", "mushroom",
               "snowman")
THIN_KINDS = ("poles", "ring_on_pole")


@dataclass
class Shape:
    """A triangle mesh with the crease angle used for its shading normals."""

    kind: str
    vertices: np.ndarray  # (N, 3) float64
    triangles: np.ndarray  # (T, 3) int64
    crease_deg: float = 40.0
    params: dict = field(default_factory=dict)

    @property
    def extent(self) -> np.ndarray:
        return self.vertices.max(0) - self.vertices.min(0)


def _arrays(mesh) -> tuple[np.ndarray, np.ndarray]:
    mesh.merge_close_vertices(1e-6)
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    # Copies: views into open3d's buffers dangle once the mesh changes.
    return np.asarray(mesh.vertices, np.float64).copy(), np.asarray(mesh.triangles, np.int64).copy()


def _combine(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    vertices, triangles, offset = [], [], 0
    for v, t in parts:
        vertices.append(v)
        triangles.append(t + offset)
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(triangles)


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _on_ground(vertices: np.ndarray) -> np.ndarray:
    """Centre the footprint on the origin and put the lowest point at z = 0."""
    low, high = vertices.min(0), vertices.max(0)
    return vertices - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])


def _fit(vertices: np.ndarray, size: float) -> np.ndarray:
    """Scale uniformly so the largest extent is ``size``."""
    extent = (vertices.max(0) - vertices.min(0)).max()
    return vertices * (size / extent)


def _sphere(radius: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    return _arrays(open3d().geometry.TriangleMesh.create_sphere(radius, resolution))


def _cylinder(radius: float, height: float, resolution: int = 64, split: int = 6):
    v, t = _arrays(open3d().geometry.TriangleMesh.create_cylinder(radius, height, resolution, split))
    return v + [0, 0, height / 2], t  # base at z = 0


def _cone(radius: float, height: float, resolution: int = 64, split: int = 6):
    return _arrays(open3d().geometry.TriangleMesh.create_cone(radius, height, resolution, split))


def _box(wx: float, wy: float, wz: float, subdivisions: int = 0):
    mesh = open3d().geometry.TriangleMesh.create_box(wx, wy, wz)
    if subdivisions:
        mesh = mesh.subdivide_midpoint(subdivisions)
    v, t = _arrays(mesh)
    return v - [wx / 2, wy / 2, 0], t


def _torus(ring: float, tube: float, radial: int = 72, tubular: int = 28):
    return _arrays(open3d().geometry.TriangleMesh.create_torus(ring, tube, radial, tubular))


def _displace_sphere(rng: np.random.Generator, vertices: np.ndarray, amount: float) -> np.ndarray:
    """Radial low-frequency noise on a sphere centred at the origin."""
    radius = np.linalg.norm(vertices, axis=1, keepdims=True)
    unit = vertices / radius
    bumps = np.zeros(len(vertices))
    for _ in range(7):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        frequency = rng.uniform(1.0, 3.5)
        bumps += rng.uniform(0.3, 1.0) * np.sin(np.pi * frequency * unit @ direction + rng.uniform(0, 2 * np.pi))
    bumps *= amount / (np.abs(bumps).max() + 1e-9)
    return unit * radius * (1.0 + bumps[:, None])


def build_blob(rng, size):
    v, t = _sphere(1.0, 48)
    v = _displace_sphere(rng, v, rng.uniform(0.1, 0.3))
    v = v * rng.uniform([0.75, 0.75, 0.6], [1.1, 1.1, 1.1])
    return Shape("blob", _on_ground(_fit(v, size)), t, crease_deg=180.0)


def build_box(rng, size):
    dims = size * rng.uniform([0.55, 0.45, 0.3], [1.0, 0.9, 0.8])
    v, t = _box(*dims, subdivisions=2)
    return Shape("box", _on_ground(_fit(v, size)), t)


def build_twisted_box(rng, size):
    dims = np.array([rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.5), 1.0]) * size
    v, t = _box(*dims, subdivisions=4)
    twist = rng.uniform(0.5, 1.3) * rng.choice([-1, 1])
    angle = twist * v[:, 2] / dims[2]
    c, s = np.cos(angle), np.sin(angle)
    v = np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)
    return Shape("twisted_box", _on_ground(_fit(v, size)), t, params={"twist_rad": round(float(twist), 3)})


def build_cylinder(rng, size):
    radius, height = rng.uniform(0.2, 0.5), 1.0
    v, t = _cylinder(radius, height, 72, 8)
    lying = bool(rng.uniform() < 0.35)
    if lying:
        v = v @ _rot_x(np.pi / 2).T
    return Shape("cylinder", _on_ground(_fit(v, size)), t, params={"lying": lying})


def build_cone(rng, size):
    v, t = _cone(rng.uniform(0.25, 0.5), 1.0, 72, 8)
    return Shape("cone", _on_ground(_fit(v, size)), t)


def build_torus(rng, size):
    tube = rng.uniform(0.12, 0.3)
    v, t = _torus(1.0 - tube, tube)
    standing = bool(rng.uniform() < 0.5)
    if standing:
        v = v @ _rot_x(np.pi / 2 - rng.uniform(0, 0.3)).T
    return Shape("torus", _on_ground(_fit(v, size)), t, crease_deg=180.0, params={"standing": standing})


def build_house(rng, size):
    w, d, h = rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.7)
    body = _box(w, d, h, subdivisions=2)
    roof_v, roof_t = _cone(np.hypot(w, d) / 2 * 1.05, rng.uniform(0.25, 0.5), 4, 3)
    roof_v = roof_v @ _rot_z(np.pi / 4).T * [w / np.hypot(w, d) * np.sqrt(2), d / np.hypot(w, d) * np.sqrt(2), 1]
    roof_v = roof_v + [0, 0, h]
    v, t = _combine([body, (roof_v, roof_t)])
    return Shape("house", _on_ground(_fit(v, size)), t)


def build_mushroom(rng, size):
    stem_r, stem_h = rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.7)
    stem = _cylinder(stem_r, stem_h, 48, 6)
    cap_v, cap_t = _sphere(0.5, 40)
    cap_v = cap_v * [1, 1, rng.uniform(0.4, 0.8)] + [0, 0, stem_h]
    v, t = _combine([stem, (cap_v, cap_t)])
    return Shape("mushroom", _on_ground(_fit(v, size)), t, crease_deg=50.0)


def build_snowman(rng, size):
    parts, z = [], 0.0
    radius = 0.5
    for _ in range(int(rng.integers(2, 4))):
        v, t = _sphere(1.0, 36)
        v = _displace_sphere(rng, v, 0.06) * radius
        parts.append((v + [0, 0, z + radius * 0.9], t))
        z += radius * 1.7
        radius *= rng.uniform(0.6, 0.8)
    v, t = _combine(parts)
    return Shape("snowman", _on_ground(_fit(v, size)), t, crease_deg=50.0)


def build_poles(rng, size):
    """Thin rods on a small base: a thin-structure hard case."""
    height = size
    base_r = rng.uniform(15.0, 25.0)
    parts = [_cylinder(base_r, rng.uniform(4.0, 8.0), 48, 1)]
    count = int(rng.integers(1, 4))
    radii = []
    for _ in range(count):
        r = rng.uniform(1.0, 3.0)
        radii.append(round(float(r), 2))
        offset = rng.uniform(-0.5, 0.5, 2) * base_r
        h = height * rng.uniform(0.6, 1.0)
        v, t = _cylinder(r, h, 16, 8)
        tilt = _rot_x(rng.uniform(-0.25, 0.25)) @ _rot_z(rng.uniform(0, 2 * np.pi))
        parts.append(((v @ tilt.T) + [*offset, 2.0], t))
    if rng.uniform() < 0.6:  # a thin crossbar
        r = rng.uniform(1.0, 2.5)
        length = rng.uniform(0.4, 0.8) * size
        v, t = _cylinder(r, length, 16, 8)
        v = (v - [0, 0, length / 2]) @ _rot_x(np.pi / 2).T @ _rot_z(rng.uniform(0, np.pi)).T
        parts.append((v + [0, 0, height * rng.uniform(0.4, 0.6)], t))
        radii.append(round(float(r), 2))
    v, t = _combine(parts)
    return Shape("poles", _on_ground(v), t, params={"rod_radii_mm": radii})


def build_ring_on_pole(rng, size):
    """A thin torus held up by a thin pole: a thin-structure hard case."""
    ring_r = size * rng.uniform(0.25, 0.4)
    tube = rng.uniform(1.5, 3.5)
    pole_r = rng.uniform(1.5, 3.0)
    pole_h = size - ring_r
    base = _cylinder(rng.uniform(15.0, 25.0), 5.0, 48, 1)
    pole = _cylinder(pole_r, pole_h + tube, 16, 8)
    v, t = _torus(ring_r, tube, 96, 12)
    v = v @ _rot_x(np.pi / 2).T @ _rot_z(rng.uniform(0, np.pi)).T + [0, 0, pole_h + ring_r]
    v, t = _combine([base, pole, (v, t)])
    return Shape("ring_on_pole", _on_ground(v), t, params={"ring_tube_mm": round(float(tube), 2),
                                                           "pole_radius_mm": round(float(pole_r), 2)})


BUILDERS = {
    "blob": build_blob,
    "box": build_box,
    "twisted_box": build_twisted_box,
    "cylinder": build_cylinder,
    "cone": build_cone,
    "torus": build_torus,
    "house": build_house,
    "mushroom": build_mushroom,
    "snowman": build_snowman,
    "poles": build_poles,
    "ring_on_pole": build_ring_on_pole,
}


def build_shape(kind: str, rng: np.random.Generator, size: float) -> Shape:
    """A ``kind`` object about ``size`` mm across, with a random yaw."""
    shape = BUILDERS[kind](rng, float(size))
    shape.vertices = _on_ground(shape.vertices @ _rot_z(rng.uniform(0, 2 * np.pi)).T)
    return shape


def corner_normals(vertices: np.ndarray, triangles: np.ndarray, crease_deg: float) -> np.ndarray:
    """(T, 3, 3) shading normals at each triangle corner, smoothed across edges flatter
    than ``crease_deg`` (area-weighted average of the adjacent faces within that angle)."""
    corners = vertices[triangles]
    area_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    unit = area_normals / (np.linalg.norm(area_normals, axis=1, keepdims=True) + 1e-20)
    if crease_deg <= 0:
        return np.repeat(unit[:, None], 3, axis=1)
    # All pairs of corners that share a vertex: group the corners by vertex.
    corner_vertex = triangles.reshape(-1)
    corner_face = np.repeat(np.arange(len(triangles)), 3)
    order = np.argsort(corner_vertex, kind="stable")
    counts = np.bincount(corner_vertex, minlength=len(vertices))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    group_size = counts[corner_vertex]  # per corner
    rep = np.repeat(np.arange(len(corner_vertex)), group_size)
    within = np.arange(len(rep)) - np.repeat(np.cumsum(group_size) - group_size, group_size)
    partner_face = corner_face[order[starts[corner_vertex[rep]] + within]]
    own_face = corner_face[rep]
    keep = np.einsum("ij,ij->i", unit[own_face], unit[partner_face]) >= np.cos(np.radians(crease_deg)) - 1e-9
    summed = np.zeros((len(corner_vertex), 3))
    for axis in range(3):
        summed[:, axis] = np.bincount(rep[keep], weights=area_normals[partner_face[keep], axis],
                                      minlength=len(corner_vertex))
    summed /= np.linalg.norm(summed, axis=1, keepdims=True) + 1e-20
    return summed.reshape(-1, 3, 3)
