"""Settings of the synthetic scene generator, and the derivation of per-part random streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvs.errors import MVSInputError

# DTU: fx ~= fy ~= 2890 px for 1600x1200 images.
DTU_FOCAL = 2890.0
DTU_WIDTH = 1600.0


@dataclass
class SynthConfig:
    """What one synthetic DTU-style scene looks like. Lengths are millimetres."""

    views: int = 49
    width: int = 640
    height: int = 512
    # Lighting conditions per view. The train layout writes them all; the test layout
    # writes only ``test_light`` (DTU's lighting 3 by default, clamped to the last one).
    lights: int = 7
    test_light: int = 3
    gt_spacing: float = 0.2  # spacing of gt_points.ply
    gt_ground_margin: float = 30.0  # ground kept in gt_points.ply up to this far from objects
    min_objects: int = 1
    max_objects: int = 4
    object_size: tuple[float, float] = (150.0, 300.0)  # extent of one object
    camera_distance: tuple[float, float] = (450.0, 850.0)  # from the scene centre
    camera_elevation: tuple[float, float] = (25.0, 68.0)  # degrees above the table
    camera_azimuth_span: tuple[float, float] = (130.0, 200.0)  # degrees covered by the rig
    table_half_size: tuple[float, float] = (380.0, 480.0)  # the textured ground plane
    hard_case_prob: float = 0.35  # chance of each hard case (low texture, thin, occlusion)
    supersample: int = 2  # sub-pixel colour rays per axis at edges (anti-aliasing)
    full_supersampling: bool = False  # supersample every pixel, not only edges (slower)
    shadows: bool = True
    noise_sigma: float = 1.2  # sensor noise, 8-bit grey levels
    depth_num: int = 192  # DEPTH_NUM written to the cam files
    depth_margin: tuple[float, float] = (0.9, 1.1)  # cam depth range: min*a .. max*b
    num_sources: int = 10  # pair.txt sources per view
    jpeg_quality: int = 95
    workers: int = 0  # render threads (0: one per CPU core)

    def validate(self) -> None:
        def fail(problem: str) -> None:
            raise MVSInputError(f"invalid synth config: {problem}")

        if self.views < 2:
            fail(f"views must be >= 2, got {self.views}")
        if self.width < 16 or self.height < 16:
            fail(f"image size must be at least 16x16, got {self.width}x{self.height}")
        if self.lights < 1:
            fail(f"lights must be >= 1, got {self.lights}")
        if self.gt_spacing <= 0:
            fail(f"gt_spacing must be > 0, got {self.gt_spacing}")
        if not 1 <= self.min_objects <= self.max_objects:
            fail(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.supersample < 1:
            fail(f"supersample must be >= 1, got {self.supersample}")
        for name in ("object_size", "camera_distance", "camera_elevation", "table_half_size"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                fail(f"{name} must be an increasing positive range, got ({low}, {high})")
        if self.camera_elevation[1] >= 89.0:
            fail("camera_elevation must stay below 89 degrees")
        if self.depth_num < 2:
            fail(f"depth_num must be >= 2, got {self.depth_num}")

    @property
    def test_light_index(self) -> int:
        return min(max(self.test_light, 0), self.lights - 1)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent random generator for one part of the generation (no global state)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *keys]))


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed derived deterministically from ``seed`` and ``keys``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *keys]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


# Keys of the random streams, so every part of a scene draws from its own generator.
KEY_RIG, KEY_OBJECTS, KEY_LIGHTS, KEY_VIEW, KEY_GT, KEY_PAIRS, KEY_SCENE = range(1, 8)
