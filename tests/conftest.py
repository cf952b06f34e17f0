from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvs.cameras import Camera, look_at

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_camera(
    rng: np.random.Generator,
    width: int = 64,
    height: int = 48,
    distance: float = 600.0,
    target: np.ndarray | None = None,
) -> Camera:
    """A camera on a sphere around ``target`` looking at it, with DTU-like intrinsics."""
    target = np.zeros(3) if target is None else target
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) + 0.5
    direction /= np.linalg.norm(direction)
    center = target + distance * direction
    focal = 2890.0 * width / 1600.0 * rng.uniform(0.9, 1.1)
    K = np.array(
        [
            [focal, rng.uniform(-0.5, 0.5), width / 2 + rng.uniform(-3, 3)],
            [0.0, focal * rng.uniform(0.98, 1.02), height / 2 + rng.uniform(-3, 3)],
            [0.0, 0.0, 1.0],
        ]
    )
    return Camera(K, look_at(center, target), width, height, distance * 0.7, distance * 1.3, 192)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def shared_scene(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


def plane_depth(camera: Camera, normal: np.ndarray, offset: float) -> np.ndarray:
    """(H, W) exact depth of the plane n.X = offset seen by ``camera`` (0 where missed)."""
    ys, xs = np.mgrid[0 : camera.height, 0 : camera.width]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(camera.intrinsics).T
    world_dirs = rays @ camera.rotation  # R^T r for each ray (z-scaled, so t is the depth)
    t = (offset - normal @ camera.center) / (world_dirs @ normal)
    return np.where(t > 0, t, 0.0).astype(np.float32)


def make_plane_scene(root: Path, views: int = 5, width: int = 48, height: int = 36, seed: int = 0):
    """A textured plane z = 0 seen by ``views`` cameras ~600 mm away; exact GT depth maps."""
    from mvs.io import write_cam, write_image, write_pair, write_pfm

    rng = np.random.default_rng(seed)
    for sub in ("images", "cams", "depths"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cameras = []
    for v in range(views):
        angle = 2 * np.pi * v / views
        center = np.array([60 * np.cos(angle), 60 * np.sin(angle), 600.0])
        K = np.array([[2890.0 * width / 1600, 0, width / 2], [0, 2890.0 * width / 1600, height / 2], [0, 0, 1]])
        camera = Camera(K, look_at(center, np.zeros(3), up=np.array([0.0, 1.0, 0.0])), width, height, 450, 750, 192)
        cameras.append(camera)
        depth = plane_depth(camera, np.array([0.0, 0.0, 1.0]), 0.0)
        write_pfm(root / "depths" / f"{v:08d}.pfm", depth)
        write_image(root / "images" / f"{v:08d}.png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        write_cam(root / "cams" / f"{v:08d}_cam.txt", camera)
    write_pair(root / "pair.txt", {v: [(s, 1.0) for s in range(views) if s != v] for v in range(views)})
    return cameras
