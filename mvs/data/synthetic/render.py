"""Ray-cast rendering of a :class:`SceneSpec` with open3d's ``RaycastingScene``.

Depth: one ray through every pixel centre. Rays are ``R^T K^-1 [u, v, 1]`` with pixel
centres at integer (u, v), so their camera-frame z component is 1 and the hit distance
``t_hit`` *is* the depth (camera-frame z), exactly, whatever the colour sampling does.

Colour: the pixel-centre samples are shaded; pixels on a geometric or lighting
discontinuity (another surface, a depth jump, a crease, a shadow edge next to them) are
re-rendered with ``supersample x supersample`` sub-pixel rays and averaged (adaptive
anti-aliasing; ``full_supersampling`` does it for every pixel). Texture detail inside
surfaces is filtered by mip-mapping with the pixel's footprint. Shading is Lambertian +
Blinn-Phong + ambient under one directional light per lighting condition, with
ray-traced shadows, then tone-mapped, gamma-encoded, vignetted and given sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvs._open3d import open3d
from mvs.cameras import Camera
from mvs.data.synthetic.scene import SceneSpec, shading_normals
from mvs.data.synthetic.textures import MipTexture, sample_triplanar

SHADOW_OFFSET = 0.05  # mm along the face normal, against self-shadowing
# Occluders nearer than this (mm) cast no shadow: on faceted curved surfaces the shadow ray
# of a smooth-shaded point grazes the neighbouring facets near the terminator.
SHADOW_NEAR = 2.0
EXPOSURE = 1.25  # tone curve 1 - exp(-EXPOSURE * radiance)
GAMMA = 1 / 2.2
VIGNETTE = 0.12  # brightness loss in the image corners
EDGE_DEPTH_JUMP = 0.01  # relative depth step between neighbours that counts as an edge
EDGE_CREASE_COS = 0.9  # face normals of neighbours less aligned than this: a crease


def _norm(vectors: np.ndarray) -> np.ndarray:
    """(N, 1) Euclidean norms of (N, 3) vectors, in their own dtype."""
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]


@dataclass
class ViewRender:
    depth: np.ndarray  # (H, W) float32 camera-frame z, 0 where no surface
    primitive: np.ndarray  # (H, W) int64 triangle hit by the pixel-centre ray, -1 if none
    images: dict[int, np.ndarray]  # light index -> (H, W, 3) uint8 RGB
    supersampled: float = 0.0  # fraction of pixels rendered with sub-pixel rays

    @property
    def mask(self) -> np.ndarray:
        return self.depth > 0


def _ray_basis(camera: Camera) -> np.ndarray:
    """(3, 3) rows u, v, w with world direction R^T K^-1 [x, y, 1] = x u + y v + w."""
    return (camera.rotation.T @ np.linalg.inv(camera.intrinsics)).T


def camera_rays(camera: Camera, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World ray origin (3,) and float32 directions (len(ys) * len(xs), 3) through pixels
    (x, y), rows first. Directions are R^T K^-1 [x, y, 1] (camera-frame z = 1), so a hit at
    parameter t lies at depth t."""
    u, v, w = _ray_basis(camera)
    xs = np.asarray(xs, np.float64)[None, :, None]
    ys = np.asarray(ys, np.float64)[:, None, None]
    directions = xs * u + (ys * v + w)
    return camera.center, directions.reshape(-1, 3).astype(np.float32)


def pixel_rays(camera: Camera, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World ray origin (3,) and float32 directions (N, 3) through pixel coordinates (x, y)."""
    u, v, w = _ray_basis(camera)
    directions = np.asarray(x, np.float64)[:, None] * u + np.asarray(y, np.float64)[:, None] * v + w
    return camera.center, directions.astype(np.float32)


@dataclass
class _Shaded:
    radiance: dict[int, np.ndarray]  # light -> (N, 3) float32 linear
    lit: dict[int, np.ndarray]  # light -> (N,) bool, directly lit (not shadowed, facing)


class Renderer:
    """All surfaces of a scene in one ray-casting structure, with their materials."""

    def __init__(self, spec: SceneSpec, threads: int = 0):
        o3d = open3d()
        self.spec = spec
        self.threads = threads  # open3d ray-casting threads (0: all cores)
        meshes = spec.meshes
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
        self.vertices = np.concatenate([m.vertices for m in meshes]).astype(np.float64)
        self.triangles = np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=False)])
        self.triangle_mesh = np.concatenate(
            [np.full(len(m.triangles), k, np.int32) for k, m in enumerate(meshes)]
        )
        self.corner_normals = np.concatenate([shading_normals(m) for m in meshes]).astype(np.float32)
        corners = self.vertices[self.triangles]
        face = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        self.face_area = 0.5 * np.linalg.norm(face, axis=1)
        self.face_normals = (face / (2 * self.face_area[:, None] + 1e-20)).astype(np.float32)
        # Triangles whose shading normals differ from the face normal at some corner.
        deviation = np.abs(self.corner_normals - self.face_normals[:, None, :]).max(axis=(1, 2))
        self.curved = deviation > 1e-6
        self.materials = [m.material for m in meshes]
        self.mips = [MipTexture(m.texture) for m in self.materials]
        self.specular = np.array([m.specular for m in self.materials], np.float32)
        self.shininess = np.array([m.shininess for m in self.materials], np.float32)
        self.num_objects = len(spec.objects)  # mesh index == num_objects is the table
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)),
            o3d.core.Tensor(self.triangles.astype(np.uint32)),
        )
        # Build the acceleration structure now, before any query that matters.
        self.cast(np.zeros(3, np.float32), np.array([[0.0, 0.0, -1.0]], np.float32))

    # ------------------------------------------------------------------ queries
    def cast(self, origin: np.ndarray, directions: np.ndarray):
        """Closest hits. Returns t (N,) float32 (inf on a miss), triangle (N,) int64 (-1 on a
        miss), barycentric uv (N, 2) float32."""
        o3d = open3d()
        rays = np.empty((len(directions), 6), np.float32)
        rays[:, :3] = origin
        rays[:, 3:] = directions
        hits = self.scene.cast_rays(o3d.core.Tensor(rays), nthreads=self.threads)
        t = hits["t_hit"].numpy()
        triangle = hits["primitive_ids"].numpy().astype(np.int64)
        triangle[~np.isfinite(t)] = -1
        return t, triangle, hits["primitive_uvs"].numpy()

    def occluded(self, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
        o3d = open3d()
        rays = np.empty((len(origins), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = direction
        hits = self.scene.test_occlusions(o3d.core.Tensor(rays), tnear=SHADOW_NEAR, nthreads=self.threads)
        return hits.numpy().astype(bool)

    def normals_at(self, triangle: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """(N, 3) unit shading normals at barycentric ``uv`` of ``triangle`` (p = (1-u-v) a + u b + v c)."""
        out = self.face_normals[triangle]
        curved = np.flatnonzero(self.curved[triangle])  # flat triangles keep the face normal
        n = self.corner_normals[triangle[curved]]  # (M, 3, 3)
        u, v = uv[curved, 0:1], uv[curved, 1:2]
        normal = n[:, 0] + u * (n[:, 1] - n[:, 0]) + v * (n[:, 2] - n[:, 0])
        out[curved] = normal / (_norm(normal) + np.float32(1e-12))
        return out

    def albedo(self, points: np.ndarray, normals: np.ndarray, triangle: np.ndarray,
               footprint_mm: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) linear albedo of surface points (``footprint_mm``: area each stands for)."""
        out = np.empty((len(points), 3), np.float32)
        mesh = self.triangle_mesh[triangle]
        order = np.argsort(mesh, kind="stable")
        bounds = np.searchsorted(mesh[order], np.arange(len(self.materials) + 1))
        for k, material in enumerate(self.materials):
            sel = order[bounds[k] : bounds[k + 1]]
            if len(sel) == 0:
                continue
            out[sel] = sample_triplanar(
                self.mips[k], points[sel], normals[sel], material.texel_mm, material.rotation,
                material.offset, material.planar, None if footprint_mm is None else footprint_mm[sel],
            )
        return out

    def object_of(self, triangle: np.ndarray) -> np.ndarray:
        """Object index of each triangle (-1: no hit, num_objects: the table)."""
        out = np.full(triangle.shape, -1, np.int32)
        hit = triangle >= 0
        out[hit] = self.triangle_mesh[triangle[hit]]
        return out

    # ------------------------------------------------------------------ shading
    def shade(self, origin: np.ndarray, directions: np.ndarray, t: np.ndarray, triangle: np.ndarray,
              uv: np.ndarray, lights: list[int], pixel_angle: float, shadows: bool) -> _Shaded:
        """Linear radiance of rays (misses get the background) under each light.

        ``pixel_angle``: the angle one sample spans (radians, about 1/f), for texture filtering.
        """
        n_rays = len(triangle)
        hit = np.flatnonzero(triangle >= 0)
        tri = triangle[hit]
        d = directions[hit]
        th = t[hit]
        points = origin.astype(np.float32) + th[:, None] * d
        length = _norm(d)
        view = -d / length
        face = self.face_normals[tri]
        facing = np.einsum("ij,ij->i", face, view)
        flip = np.where(facing < 0, np.float32(-1), np.float32(1))
        face = face * flip[:, None]  # the side the camera sees
        normals = self.normals_at(tri, uv[hit]) * flip[:, None]
        footprint = th * length[:, 0] * np.float32(pixel_angle) / np.sqrt(np.maximum(np.abs(facing), 0.05))
        albedo = self.albedo(points, normals, tri, footprint)
        mesh = self.triangle_mesh[tri]
        ks, shininess = self.specular[mesh], self.shininess[mesh]
        shadow_origins = points + np.float32(SHADOW_OFFSET) * face
        background = self.spec.background.astype(np.float32)

        shaded = _Shaded({}, {})
        for index in lights:
            light = self.spec.lights[index]
            to_light = light.direction.astype(np.float32)
            n_dot_l = np.einsum("ij,j->i", normals, to_light)
            lit = n_dot_l > 0
            if shadows:
                front = np.flatnonzero(lit)
                lit[front[self.occluded(shadow_origins[front], to_light)]] = False
            half = view + to_light
            half /= _norm(half) + np.float32(1e-12)
            n_dot_h = np.clip(np.einsum("ij,ij->i", normals, half), 0.0, 1.0)
            strength = (light.intensity * light.color).astype(np.float32)
            direct = np.where(lit, n_dot_l, np.float32(0))[:, None] * strength
            # Highlights only where they can matter: (0.2^5) * 0.5 is far below a grey level.
            glossy = np.flatnonzero(lit & (n_dot_h > 0.2) & (ks > 0))
            highlight = np.zeros((len(hit), 3), np.float32)
            highlight[glossy] = (ks[glossy] * n_dot_h[glossy] ** shininess[glossy])[:, None] * strength
            radiance = np.empty((n_rays, 3), np.float32)
            radiance[:] = background
            radiance[hit] = albedo * (np.float32(light.ambient) + direct) + highlight
            flags = np.zeros(n_rays, bool)
            flags[hit] = lit
            shaded.radiance[index] = radiance
            shaded.lit[index] = flags
        return shaded

    # ------------------------------------------------------------------ rendering
    def _edges(self, triangle: np.ndarray, depth: np.ndarray, lit: dict[int, np.ndarray]) -> np.ndarray:
        """(H, W) bool: pixels next to a discontinuity (surface, depth, crease, shadow)."""
        height, width = depth.shape
        mesh = self.object_of(triangle).reshape(height, width)
        normal = np.zeros((height * width, 3), np.float32)
        hit = triangle >= 0
        normal[hit] = self.face_normals[triangle[hit]]
        normal = normal.reshape(height, width, 3)
        flags = [f.reshape(height, width) for f in lit.values()]
        edge = np.zeros((height, width), bool)
        for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                     ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
            differ = mesh[a] != mesh[b]
            differ |= np.abs(depth[a] - depth[b]) > EDGE_DEPTH_JUMP * np.maximum(depth[a], depth[b])
            differ |= np.einsum("ijk,ijk->ij", normal[a], normal[b]) < EDGE_CREASE_COS
            for f in flags:
                differ |= f[a] != f[b]
            edge[a] |= differ
            edge[b] |= differ
        return edge

    def render_view(self, camera: Camera, light_indices: list[int], rng: np.random.Generator,
                    supersample: int = 2, shadows: bool = True, noise_sigma: float = 1.2,
                    full_supersampling: bool = False) -> ViewRender:
        width, height = camera.width, camera.height
        pixel_angle = 1.0 / float(np.sqrt(camera.intrinsics[0, 0] * camera.intrinsics[1, 1]))
        # Pixel centres: exact depth, and the colour of pixels away from edges.
        origin, directions = camera_rays(camera, np.arange(width), np.arange(height))
        t, triangle, uv = self.cast(origin.astype(np.float32), directions)
        depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32).reshape(height, width)
        primitive = triangle.reshape(height, width)

        ss = supersample
        if full_supersampling and ss > 1:
            radiance = None
            redo = np.arange(height * width)
        else:
            shaded = self.shade(origin, directions, t, triangle, uv, light_indices, pixel_angle, shadows)
            radiance = shaded.radiance
            redo = np.flatnonzero(self._edges(triangle, depth, shaded.lit)) if ss > 1 else np.zeros(0, int)
        if len(redo):
            sub = (np.arange(ss) + 0.5) / ss - 0.5
            ox, oy = np.meshgrid(sub, sub)
            px = (redo % width)[:, None] + ox.ravel()[None, :]
            py = (redo // width)[:, None] + oy.ravel()[None, :]
            _, sub_dirs = pixel_rays(camera, px.ravel(), py.ravel())
            st, stri, suv = self.cast(origin.astype(np.float32), sub_dirs)
            fine = self.shade(origin, sub_dirs, st, stri, suv, light_indices, pixel_angle / ss, shadows)
            if radiance is None:
                radiance = {k: np.empty((height * width, 3), np.float32) for k in light_indices}
            for k in light_indices:
                radiance[k][redo] = fine.radiance[k].reshape(len(redo), ss * ss, 3).mean(axis=1)

        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        radius2 = ((xx - (width - 1) / 2) ** 2 + (yy - (height - 1) / 2) ** 2) / (
            ((width - 1) / 2) ** 2 + ((height - 1) / 2) ** 2)
        gain = (255.0 * (1.0 - VIGNETTE * radius2))[..., None].astype(np.float32)
        images = {}
        for k in light_indices:
            pixel = radiance[k].reshape(height, width, 3)
            tone = (1.0 - np.exp(np.float32(-EXPOSURE) * pixel)) ** np.float32(GAMMA)
            value = tone * gain
            value += rng.standard_normal(tone.shape, dtype=np.float32) * np.float32(noise_sigma)
            images[k] = np.clip(np.rint(value), 0, 255).astype(np.uint8)
        return ViewRender(depth, primitive, images, len(redo) / (height * width))
