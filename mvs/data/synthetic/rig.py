"""The camera rig: DTU-like cameras in rows on a spherical cap above the scene."""

from __future__ import annotations

import numpy as np

from mvs.cameras import Camera, look_at
from mvs.data.synthetic.config import DTU_FOCAL, DTU_WIDTH, SynthConfig

# Depth range written before the real one is known from the rendered depth.
PLACEHOLDER_RANGE = (1.0, 2.0)


def _row_sizes(views: int, elevations: np.ndarray) -> list[int]:
    """Cameras per row, proportional to the row's circumference (largest remainder)."""
    weights = np.cos(np.radians(elevations))
    share = views * weights / weights.sum()
    sizes = np.floor(share).astype(int)
    sizes = np.maximum(sizes, 1)
    while sizes.sum() > views:
        sizes[np.argmax(sizes)] -= 1
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    k = 0
    while sizes.sum() < views:
        sizes[order[k % len(order)]] += 1
        k += 1
    return sizes.tolist()


def intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """DTU-like K scaled to the image width (fx ~ 2890 at 1600 px), centre near the middle."""
    focal = DTU_FOCAL * width / DTU_WIDTH * rng.uniform(0.99, 1.01)
    return np.array([
        [focal, 0.0, (width - 1) / 2 + rng.uniform(-0.01, 0.01) * width],
        [0.0, focal * rng.uniform(0.998, 1.002), (height - 1) / 2 + rng.uniform(-0.01, 0.01) * height],
        [0.0, 0.0, 1.0],
    ])


def sample_rig(rng: np.random.Generator, config: SynthConfig, target: np.ndarray,
               obstacles: list[tuple[np.ndarray, float]] = ()) -> list[Camera]:
    """``config.views`` cameras looking at ``target``, ordered row by row (serpentine).

    ``obstacles``: (centre, radius) spheres the camera centres must stay out of.
    """
    views = config.views
    rows = max(1, int(round(np.sqrt(views / 2.0))))
    el_low, el_high = config.camera_elevation
    elevations = np.linspace(el_high, el_low, rows) if rows > 1 else np.array([(el_low + el_high) / 2])
    sizes = _row_sizes(views, elevations)
    span = np.radians(rng.uniform(*config.camera_azimuth_span))
    heading = rng.uniform(0, 2 * np.pi)
    d_low, d_high = config.camera_distance
    quarter = (d_high - d_low) / 4
    base = rng.uniform(d_low + quarter, d_high - quarter)
    row_step = (el_high - el_low) / max(rows - 1, 1)
    cameras = []
    for r, (elevation, size) in enumerate(zip(elevations, sizes, strict=True)):
        slots = heading - span / 2 + (np.arange(size) + 0.5) / size * span
        if r % 2 == 1:
            slots = slots[::-1]
        for azimuth0 in slots:
            for attempt in range(100):
                azimuth = azimuth0 + rng.uniform(-0.15, 0.15) * span / size
                el = np.radians(np.clip(elevation + rng.uniform(-0.2, 0.2) * row_step, el_low, el_high))
                distance = base + rng.uniform(-quarter, quarter) + attempt * 5.0
                aim = target + rng.uniform(-8.0, 8.0, 3)
                offset = np.array([np.cos(el) * np.cos(azimuth), np.cos(el) * np.sin(azimuth), np.sin(el)])
                centre = target + distance * offset
                if all(np.linalg.norm(centre - c) > r_ for c, r_ in obstacles):
                    break
            E = look_at(centre, aim, np.array([0.0, 0.0, 1.0]))
            K = intrinsics(rng, config.width, config.height)
            cameras.append(Camera(K, E, config.width, config.height, *PLACEHOLDER_RANGE, config.depth_num))
    return cameras
