"""Surface points seen by the cameras: area sampling of the meshes and depth-map visibility.

A point is *visible* in a view when its triangle faces the camera, it projects inside
the image and it is not behind the rendered surface there: its depth is at most the
largest of the four ground-truth depths around its projection, plus a small tolerance.
On a planar facet the depth of a point between four pixel centres lies within their
depths, so the test is tight without a slope-dependent tolerance; pixels with no surface
count as infinitely far.

Which views to test: a triangle can only be seen by a view whose pixel rays hit it (or,
for triangles thinner than a few pixels, hit a neighbour), so each point is tested first
in the view that hit its triangle most, and only if hidden there in the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mvs.cameras import Camera
from mvs.data.synthetic.config import stream
from mvs.data.synthetic.render import Renderer

DEPTH_TOLERANCE = 0.2  # mm
SMALL_TRIANGLE_MM = 2.0  # triangles with an altitude this short may fall between pixel rays
CHUNK_POINTS = 1_000_000  # dense sampling runs in chunks of about this many points


@dataclass
class SurfaceSamples:
    points: np.ndarray  # (N, 3) float32 world
    triangle: np.ndarray  # (N,) int32
    barycentric: np.ndarray  # (N, 2) float32 (u, v) as in Renderer.normals_at

    def __len__(self) -> int:
        return len(self.points)

    def subset(self, index: np.ndarray) -> SurfaceSamples:
        return SurfaceSamples(self.points[index], self.triangle[index], self.barycentric[index])

    @staticmethod
    def concatenate(parts: list[SurfaceSamples]) -> SurfaceSamples:
        if not parts:
            return SurfaceSamples(np.zeros((0, 3), np.float32), np.zeros(0, np.int32), np.zeros((0, 2), np.float32))
        return SurfaceSamples(np.concatenate([p.points for p in parts]),
                              np.concatenate([p.triangle for p in parts]),
                              np.concatenate([p.barycentric for p in parts]))


class Views:
    """The cameras of a scene with their ground-truth depth and the triangles each may see."""

    def __init__(self, renderer: Renderer, cameras: list[Camera], depths: list[np.ndarray],
                 primitives: list[np.ndarray]):
        self.renderer = renderer
        self.cameras = cameras
        self.shapes = [d.shape for d in depths]
        self.far = [np.where(d > 0, d, np.inf).astype(np.float32).ravel() for d in depths]
        # x_pixel_homogeneous = K R p + K t; its third component is the depth (K[2] = 0 0 1).
        self.projections = [((c.intrinsics @ c.rotation).astype(np.float32),
                             (c.intrinsics @ c.translation).astype(np.float32)) for c in cameras]
        num_triangles = len(renderer.triangles)
        hits = np.zeros((len(cameras), num_triangles), np.int32)
        for v, primitive in enumerate(primitives):
            hits[v] = np.bincount(primitive[primitive >= 0].ravel(), minlength=num_triangles)
        self.front = self._front_facing()
        small = _altitude(renderer) < SMALL_TRIANGLE_MM
        candidates = hits > 0
        for v in range(len(cameras)):
            seen_vertex = np.zeros(len(renderer.vertices), bool)
            seen_vertex[renderer.triangles[candidates[v]].ravel()] = True
            candidates[v] |= small & seen_vertex[renderer.triangles].any(axis=1)
        self.candidates = candidates & self.front  # (V, T)
        primary = np.argmax(hits, axis=0)
        unhit = hits.max(axis=0) == 0
        primary[unhit] = np.argmax(self.candidates[:, unhit], axis=0)
        self.primary = primary.astype(np.int32)  # (T,) view to test a triangle's points in first
        self.frames = _triangle_frames(renderer)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["renderer"] = None  # holds open3d objects; re-attach with attach()
        return state

    def attach(self, renderer: Renderer) -> Views:
        self.renderer = renderer
        return self

    def _front_facing(self) -> np.ndarray:
        """(V, T) bool: the triangle's front side faces the camera centre."""
        r = self.renderer
        normals = r.face_normals.astype(np.float64)
        offset = np.einsum("ij,ij->i", normals, r.vertices[r.triangles[:, 0]])
        centres = np.array([c.center for c in self.cameras])
        return np.einsum("vk,tk->vt", centres, normals) > offset[None, :]

    @property
    def seen_triangles(self) -> np.ndarray:
        return self.candidates.any(axis=0)

    def test(self, view: int, points: np.ndarray, tolerance: float = DEPTH_TOLERANCE) -> np.ndarray:
        """(N,) bool: float32 ``points`` not hidden in ``view`` (facing is not checked here)."""
        height, width = self.shapes[view]
        rotation, translation = self.projections[view]
        h = np.einsum("ij,kj->ik", points, rotation)
        h += translation
        z = h[:, 2]
        ok = z > 0
        safe = np.where(ok, z, np.float32(1))
        x = h[:, 0] / safe
        y = h[:, 1] / safe
        ok &= (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
        x0 = np.clip(np.floor(np.where(ok, x, 0)), 0, width - 2).astype(np.int64)
        y0 = np.clip(np.floor(np.where(ok, y, 0)), 0, height - 2).astype(np.int64)
        index = y0 * width + x0
        far = self.far[view]
        limit = np.maximum(np.maximum(far[index], far[index + 1]),
                           np.maximum(far[index + width], far[index + width + 1]))
        return ok & (z <= limit + np.float32(tolerance))

    def visible_somewhere(self, samples: SurfaceSamples) -> np.ndarray:
        """(N,) bool: seen by at least one view."""
        tri = samples.triangle
        visible = np.zeros(len(samples), bool)
        first = self.primary[tri]
        order = np.argsort(first, kind="stable")
        bounds = np.searchsorted(first[order], np.arange(len(self.cameras) + 1))
        for v in range(len(self.cameras)):
            index = order[bounds[v] : bounds[v + 1]]
            if len(index):
                index = index[self.candidates[v, tri[index]]]
                visible[index] = self.test(v, samples.points[index])
        rest = np.flatnonzero(~visible)
        for v in range(len(self.cameras)):
            if len(rest) == 0:
                break
            index = rest[self.candidates[v, tri[rest]] & (first[rest] != v)]
            if len(index):
                visible[index[self.test(v, samples.points[index])]] = True
                rest = rest[~visible[rest]]
        return visible

    def matrix(self, samples: SurfaceSamples) -> np.ndarray:
        """(V, N) bool: every view's visibility of every sample."""
        return np.stack([self.test(v, samples.points) & self.front[v, samples.triangle]
                         for v in range(len(self.cameras))])


def _altitude(renderer: Renderer) -> np.ndarray:
    """(T,) shortest altitude of each triangle (twice the area over the longest edge)."""
    corners = renderer.vertices[renderer.triangles]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2)
    return 2.0 * renderer.face_area / np.maximum(edges.max(axis=1), 1e-12)


def project(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and camera-frame depth (N,) of world points."""
    cam = np.einsum("ij,kj->ik", np.asarray(points, np.float64), camera.rotation) + camera.translation
    z = cam[:, 2]
    safe = np.where(z > 1e-9, z, 1.0)
    pixels = np.einsum("ij,kj->ik", cam, camera.intrinsics)
    return pixels[:, :2] / safe[:, None], z


def _triangle_frames(renderer: Renderer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    corners = renderer.vertices[renderer.triangles]
    return (corners[:, 0].astype(np.float32), (corners[:, 1] - corners[:, 0]).astype(np.float32),
            (corners[:, 2] - corners[:, 0]).astype(np.float32))


def sample_triangles(renderer: Renderer, triangles: np.ndarray, spacing: float,
                     rng: np.random.Generator, frames=None) -> SurfaceSamples:
    """Points uniformly by area on ``triangles`` (indices), about one per spacing^2."""
    base, edge1, edge2 = frames if frames is not None else _triangle_frames(renderer)
    expected = renderer.face_area[triangles] / spacing**2
    counts = np.floor(expected).astype(np.int64)
    counts += rng.random(len(expected)) < (expected - counts)
    owner = np.repeat(triangles.astype(np.int32), counts)
    # Uniform in the triangle: uniform in the unit square, folded back across u + v = 1.
    uv = rng.random((len(owner), 2), dtype=np.float32)
    fold = uv.sum(axis=1) > 1
    uv[fold] = 1 - uv[fold]
    # Points of a triangle are consecutive: repeat its frame rather than gather it.
    points = np.repeat(base[triangles], counts, axis=0)
    points += uv[:, 0:1] * np.repeat(edge1[triangles], counts, axis=0)
    points += uv[:, 1:2] * np.repeat(edge2[triangles], counts, axis=0)
    return SurfaceSamples(points, owner, uv)


def ground_near_objects(renderer: Renderer, points: np.ndarray, margin: float, cell: float = 2.0) -> np.ndarray:
    """(N,) bool: table points within ``margin`` (xy) of an object's footprint (its convex hull)."""
    objects = renderer.spec.objects
    xy_all = np.concatenate([o.vertices[:, :2] for o in objects])
    low = xy_all.min(0) - margin - cell
    high = xy_all.max(0) + margin + cell
    shape = tuple(np.ceil((high - low) / cell).astype(int) + 1)
    footprint = np.zeros((shape[1], shape[0]), np.uint8)
    for o in objects:
        pix = np.round((o.vertices[:, :2] - low) / cell).astype(np.int32)
        cv2.fillConvexPoly(footprint, cv2.convexHull(pix), 1)
    distance = cv2.distanceTransform((1 - footprint).astype(np.uint8), cv2.DIST_L2, 5) * cell
    ij = np.round((points[:, :2] - low) / cell).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
    near = np.zeros(len(points), bool)
    near[inside] = distance[ij[inside, 1], ij[inside, 0]] <= margin
    return near


def plan_chunks(views: Views, spacing: float, ground_margin: float | None = None) -> list[np.ndarray]:
    """The triangles to sample (those some view may see; with ``ground_margin``, only the
    table near the objects), split into chunks of about CHUNK_POINTS points."""
    renderer = views.renderer
    table = renderer.triangle_mesh == renderer.num_objects
    seen = views.seen_triangles.copy()
    index = np.flatnonzero(seen & table) if ground_margin is not None else np.zeros(0, np.int64)
    if len(index):  # drop table triangles entirely out of reach before sampling densely
        corners = renderer.vertices[renderer.triangles[index]]
        centroid = corners.mean(axis=1)
        reach = np.linalg.norm(corners - centroid[:, None], axis=2).max()
        seen[index] = ground_near_objects(renderer, centroid, ground_margin + reach)
    triangles = np.flatnonzero(seen)
    expected = np.cumsum(renderer.face_area[triangles] / spacing**2)
    total = expected[-1] if len(expected) else 0.0
    cuts = np.searchsorted(expected, np.arange(CHUNK_POINTS, total, CHUNK_POINTS))
    return [chunk for chunk in np.split(triangles, cuts) if len(chunk)]


def sample_chunk(views: Views, triangles: np.ndarray, spacing: float, rng: np.random.Generator,
                 ground_margin: float | None = None) -> SurfaceSamples:
    """Area samples of ``triangles`` that at least one camera sees (see plan_chunks)."""
    renderer = views.renderer
    samples = sample_triangles(renderer, triangles, spacing, rng, views.frames)
    if ground_margin is not None:
        on_table = np.flatnonzero(renderer.triangle_mesh[samples.triangle] == renderer.num_objects)
        far = on_table[~ground_near_objects(renderer, samples.points[on_table], ground_margin)]
        samples.triangle[far] = -1  # dropped below
    keep = samples.triangle >= 0
    keep[keep] = views.visible_somewhere(samples.subset(np.flatnonzero(keep)))
    return samples.subset(np.flatnonzero(keep))


def sample_visible_surface(views: Views, spacing: float, seed: int, key: int,
                           ground_margin: float | None = None) -> SurfaceSamples:
    """Area samples (about one per ``spacing``^2) of the surface seen by at least one camera.

    Chunk k draws from ``stream(seed, key, k)``, so running the chunks elsewhere (worker
    processes) gives the same points. ``ground_margin``: keep only the table within that
    distance of the objects (None: all of it).
    """
    chunks = plan_chunks(views, spacing, ground_margin)
    return SurfaceSamples.concatenate([
        sample_chunk(views, chunk, spacing, stream(seed, key, k), ground_margin)
        for k, chunk in enumerate(chunks)
    ])


def occlusion_between_objects(views: Views, primitives: list[np.ndarray], samples: SurfaceSamples,
                              visibility: np.ndarray) -> list[float]:
    """Per object: the fraction of its (point, view) pairs, with the point facing the camera
    inside the image, where another object hides it."""
    renderer = views.renderer
    owner = renderer.object_of(samples.triangle)
    hidden = np.zeros(renderer.num_objects)
    total = np.zeros(renderer.num_objects)
    for v, camera in enumerate(views.cameras):
        height, width = primitives[v].shape
        pixels, z = project(camera, samples.points)
        x = np.rint(pixels[:, 0]).astype(np.int64)
        y = np.rint(pixels[:, 1]).astype(np.int64)
        ok = (z > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        ok &= views.front[v, samples.triangle] & (owner < renderer.num_objects)
        index = np.flatnonzero(ok)
        there = renderer.object_of(primitives[v][y[index], x[index]])
        by_other = ~visibility[v, index] & (there != owner[index]) & (there >= 0) & (there < renderer.num_objects)
        np.add.at(total, owner[index], 1)
        np.add.at(hidden, owner[index][by_other], 1)
    return [float(h / t) if t else 0.0 for h, t in zip(hidden, total, strict=True)]


def point_colors(renderer: Renderer, samples: SurfaceSamples) -> np.ndarray:
    """(N, 3) uint8 sRGB albedo of the samples."""
    out = np.empty((len(samples), 3), np.uint8)
    for start in range(0, len(samples), CHUNK_POINTS):
        part = slice(start, start + CHUNK_POINTS)
        normals = renderer.normals_at(samples.triangle[part], samples.barycentric[part])
        albedo = renderer.albedo(samples.points[part], normals, samples.triangle[part])
        out[part] = np.clip(np.rint(albedo ** (1 / 2.2) * 255.0), 0, 255).astype(np.uint8)
    return out
