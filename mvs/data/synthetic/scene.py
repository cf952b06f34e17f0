"""The random description of one scene: objects on a table, their materials, the lights.

Nothing here renders; :mod:`mvs.data.synthetic.render` turns a :class:`SceneSpec` and a
camera rig into images and depth maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mvs.data.synthetic.config import SynthConfig
from mvs.data.synthetic.shapes import SOLID_KINDS, THIN_KINDS, Shape, build_shape, corner_normals
from mvs.data.synthetic.textures import TextureInfo, ground_texture, object_texture

# Keep objects at least this far from any camera centre (mm, beyond their bounding radius).
CAMERA_CLEARANCE = 80.0
GROUND_CELL = 12.5  # table triangulation (mm): fine enough for per-triangle visibility


@dataclass
class Material:
    texture: np.ndarray  # (S, S, 3) float32 linear albedo
    texel_mm: float  # size of one texel on the surface
    rotation: np.ndarray  # (3, 3) frame of the triplanar projection
    offset: np.ndarray  # (3,) mm
    specular: float  # Blinn-Phong weight
    shininess: float
    planar: bool  # project along z only (the table)
    info: TextureInfo

    def describe(self) -> dict:
        return {
            "texture": self.info.source,
            "low_texture": self.info.low_texture,
            "texture_tile_mm": round(self.texel_mm * self.texture.shape[0], 1),
            "specular": round(self.specular, 3),
            "shininess": round(self.shininess, 1),
        }


@dataclass
class SceneObject:
    name: str
    shape: Shape
    vertices: np.ndarray  # (N, 3) world, mm
    triangles: np.ndarray  # (T, 3)
    material: Material
    flags: list[str] = field(default_factory=list)

    @property
    def footprint(self) -> tuple[np.ndarray, float]:
        """(centre xy, radius) of a circle holding the object's footprint."""
        xy = self.vertices[:, :2]
        centre = (xy.min(0) + xy.max(0)) / 2
        return centre, float(np.linalg.norm(xy - centre, axis=1).max())

    @property
    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        centre = (self.vertices.min(0) + self.vertices.max(0)) / 2
        return centre, float(np.linalg.norm(self.vertices - centre, axis=1).max())

    def describe(self) -> dict:
        low, high = self.vertices.min(0), self.vertices.max(0)
        return {
            "name": self.name,
            "kind": self.shape.kind,
            "params": self.shape.params,
            "bbox_min": low.round(2).tolist(),
            "bbox_max": high.round(2).tolist(),
            "size_mm": round(float((high - low).max()), 1),
            "triangles": int(len(self.triangles)),
            "material": self.material.describe(),
            "flags": list(self.flags),
        }


@dataclass
class Light:
    """A directional light plus the ambient term of one lighting condition."""

    direction: np.ndarray  # (3,) unit, towards the light
    intensity: float
    color: np.ndarray  # (3,) linear RGB
    ambient: float

    def describe(self) -> dict:
        return {
            "direction": self.direction.round(4).tolist(),
            "intensity": round(self.intensity, 3),
            "color": self.color.round(3).tolist(),
            "ambient": round(self.ambient, 3),
        }


@dataclass
class SceneSpec:
    objects: list[SceneObject]
    ground: SceneObject
    lights: list[Light]
    hard_cases: list[str]
    target: np.ndarray  # point the cameras look at
    background: np.ndarray  # (3,) linear RGB of rays that miss everything

    @property
    def meshes(self) -> list[SceneObject]:
        """All surfaces, objects first, the table last."""
        return [*self.objects, self.ground]

    def describe(self) -> dict:
        return {
            "objects": [o.describe() for o in self.objects],
            "ground": {
                "size_mm": (self.ground.vertices.max(0) - self.ground.vertices.min(0))[:2].round(1).tolist(),
                "material": self.ground.material.describe(),
            },
            "lights": [light.describe() for light in self.lights],
            "hard_cases": list(self.hard_cases),
            "target": self.target.round(2).tolist(),
        }


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def sample_lights(rng: np.random.Generator, count: int) -> list[Light]:
    """``count`` lighting conditions, like DTU's: one key light each, from varied directions."""
    lights = []
    azimuths = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, count, endpoint=False)
    for k in range(count):
        azimuth = azimuths[k] + rng.uniform(-0.3, 0.3)
        elevation = np.radians(rng.uniform(30.0, 80.0))
        direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)])
        warmth = rng.uniform(-0.08, 0.08)
        color = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
        intensity = rng.uniform(0.75, 1.15)
        ambient = rng.uniform(0.12, 0.3)
        if k == count - 1 and count > 1:  # like DTU's brightest condition: everything on
            intensity, ambient = 1.0, 0.45
        lights.append(Light(direction, float(intensity), color, float(ambient)))
    return lights


def _material(rng: np.random.Generator, low_texture: bool) -> Material:
    texture, info = object_texture(rng, low_texture)
    glossy = low_texture or rng.uniform() < 0.4
    return Material(
        texture=texture,
        texel_mm=float(rng.uniform(70.0, 220.0) / texture.shape[0]),
        rotation=random_rotation(rng),
        offset=rng.uniform(-500, 500, 3),
        specular=float(rng.uniform(0.15, 0.5) if glossy else rng.uniform(0.0, 0.08)),
        shininess=float(rng.uniform(20, 80) if glossy else rng.uniform(5, 15)),
        planar=False,
        info=info,
    )


def _ground(rng: np.random.Generator, half: float) -> SceneObject:
    cells = max(2, int(np.ceil(2 * half / GROUND_CELL)))
    ticks = np.linspace(-half, half, cells + 1)
    gx, gy = np.meshgrid(ticks, ticks)
    vertices = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    idx = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])  # normals +z
    texture, info = ground_texture(rng)
    material = Material(
        texture=texture,
        texel_mm=float(rng.uniform(150.0, 350.0) / texture.shape[0]),
        rotation=_rot_z_matrix(rng.uniform(0, 2 * np.pi)),
        offset=rng.uniform(-500, 500, 3),
        specular=float(rng.uniform(0.0, 0.1)),
        shininess=float(rng.uniform(5, 20)),
        planar=True,
        info=info,
    )
    shape = Shape("table", vertices, triangles, crease_deg=0.0)
    return SceneObject("table", shape, vertices, triangles, material)


def _rot_z_matrix(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


PLACEMENT_CELL = 2.0  # mm, raster of the footprints used to place objects
PLACEMENT_HALF = 1000.0  # mm, half size of that raster


def _hull_offsets(xy: np.ndarray) -> np.ndarray:
    """(K, 2) raster cells (x, y) covered by the convex hull of footprint points ``xy``."""
    cells = np.round(xy / PLACEMENT_CELL).astype(np.int32)
    low = cells.min(0)
    size = cells.max(0) - low + 1
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(cells - low), 1)
    ys, xs = np.nonzero(mask)
    return np.stack([xs, ys], 1) + low


def _place(rng: np.random.Generator, footprints: list[np.ndarray], tight: bool) -> list[np.ndarray]:
    """Footprint offsets (xy, mm) for objects with footprint points ``footprints`` (centred on
    the origin): each one slides in from a random direction until it is a random gap away
    from those already placed (2-15 mm when ``tight``, 15-80 mm otherwise); no overlaps."""
    n = int(2 * PLACEMENT_HALF / PLACEMENT_CELL)
    occupied = np.zeros((n, n), np.uint8)
    centre_cell = n // 2
    offsets = [np.zeros(2)]
    hulls = [_hull_offsets(f) for f in footprints]
    for k, hull in enumerate(hulls):
        if k > 0:
            distance = cv2.distanceTransform(1 - occupied, cv2.DIST_L2, 5) * PLACEMENT_CELL
            gap = rng.uniform(2.0, 15.0) if tight else rng.uniform(15.0, 80.0)
            angle = rng.uniform(0, 2 * np.pi)
            direction = np.array([np.cos(angle), np.sin(angle)])
            start = np.mean(offsets, axis=0)
            for step in range(n):
                position = start + direction * step * PLACEMENT_CELL
                cells = hull + np.round(position / PLACEMENT_CELL).astype(np.int32) + centre_cell
                if cells.min() < 0 or cells.max() >= n:
                    raise RuntimeError("objects do not fit on the placement raster")
                if distance[cells[:, 1], cells[:, 0]].min() >= gap:
                    break
            offsets.append(position)
        cells = hull + np.round(offsets[k] / PLACEMENT_CELL).astype(np.int32) + centre_cell
        occupied[cells[:, 1], cells[:, 0]] = 1
    middle = np.mean([f.min(0) + o for f, o in zip(footprints, offsets, strict=True)]
                     + [f.max(0) + o for f, o in zip(footprints, offsets, strict=True)], axis=0)
    return [o - middle for o in offsets]


def _clear_of_cameras(centres, radii, heights, cameras: np.ndarray) -> bool:
    for c, r, h in zip(centres, radii, heights, strict=True):
        middle = np.array([c[0], c[1], h / 2])
        reach = np.hypot(r, h / 2) + CAMERA_CLEARANCE
        if np.any(np.linalg.norm(cameras - middle, axis=1) < reach):
            return False
    return True


def sample_scene(rng: np.random.Generator, config: SynthConfig, lights: list[Light] | None = None,
                 cameras: np.ndarray | None = None, light_rng: np.random.Generator | None = None) -> SceneSpec:
    """A random scene. ``cameras`` (V, 3): centres of a fixed rig the objects must keep clear of.
    ``lights``: fixed lighting conditions (a shared rig), else drawn from ``light_rng``."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    hard_cases = []
    low_texture = rng.uniform() < config.hard_case_prob
    thin = rng.uniform() < config.hard_case_prob
    tight = count > 1 and rng.uniform() < config.hard_case_prob
    if low_texture:
        hard_cases.append("low_texture")
    if thin:
        hard_cases.append("thin_structure")
    if tight:
        hard_cases.append("occlusion")
    kinds = [str(rng.choice(SOLID_KINDS)) for _ in range(count)]
    if thin:
        kinds[int(rng.integers(0, count))] = str(rng.choice(THIN_KINDS))
    low_index = int(rng.integers(0, count)) if low_texture else -1
    size_low, size_high = config.object_size
    size_high = max(size_low, size_high - 25.0 * (count - 1))  # smaller objects in busy scenes
    shapes, materials, flags = [], [], []
    for k, kind in enumerate(kinds):
        shape = build_shape(kind, rng, rng.uniform(size_low, size_high))
        shapes.append(shape)
        materials.append(_material(rng, low_texture=k == low_index))
        f = []
        if k == low_index:
            f.append("low_texture")
        if kind in THIN_KINDS:
            f.append("thin_structure")
        flags.append(f)
    footprints = [s.vertices[:, :2] for s in shapes]
    heights = [float(s.vertices[:, 2].max()) for s in shapes]
    for _ in range(100):
        centres = _place(rng, footprints, tight)
        radii = [float(np.linalg.norm(f, axis=1).max()) for f in footprints]
        if cameras is None or _clear_of_cameras(centres, radii, heights, cameras):
            break
    else:
        raise RuntimeError("could not place the objects clear of the cameras; reduce object sizes")
    objects = []
    for k, (shape, material, centre) in enumerate(zip(shapes, materials, centres, strict=True)):
        vertices = shape.vertices + [centre[0], centre[1], -0.5]  # sunk 0.5 mm: no floating gap
        objects.append(SceneObject(f"object_{k}", shape, vertices, shape.triangles, material, flags[k]))
    cluster = max(np.linalg.norm(c) + r for c, r in zip(centres, radii, strict=True))
    half = max(rng.uniform(*config.table_half_size), cluster + 150.0)
    ground = _ground(rng, half)
    if lights is None:
        lights = sample_lights(light_rng if light_rng is not None else rng, config.lights)
    top = max(heights)
    target = np.array([0.0, 0.0, 0.35 * top])
    background = np.full(3, rng.uniform(0.004, 0.02)) * rng.uniform(0.8, 1.2, 3)
    return SceneSpec(objects, ground, lights, hard_cases, target, background)


def shading_normals(obj: SceneObject) -> np.ndarray:
    """(T, 3, 3) per-corner shading normals of a placed object."""
    return corner_normals(obj.vertices, obj.triangles, obj.shape.crease_deg)
