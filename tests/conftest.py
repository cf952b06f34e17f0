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
