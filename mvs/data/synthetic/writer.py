"""File layouts written by the generator: the MVSNet test layout and DTU's training layout.

Test layout (one scene)::

    SCENE/images/{v:08d}.jpg  SCENE/cams/{v:08d}_cam.txt  SCENE/pair.txt
    SCENE/depths/{v:08d}.pfm  SCENE/masks/{v:08d}.png     SCENE/gt_points.ply  SCENE/scene.json

Training layout (DTU / MVSNet ``dtu_training``; one rig shared by all scans, N = 1..)::

    ROOT/Rectified/scan{N}_train/rect_{v+1:03d}_{light}_r5000.png
    ROOT/Depths/scan{N}_train/depth_map_{v:04d}.pfm  ROOT/Depths/scan{N}_train/depth_visual_{v:04d}.png
    ROOT/Cameras/train/{v:08d}_cam.txt  ROOT/Cameras/pair.txt  ROOT/synth_train.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mvs.cameras import Camera
from mvs.data.synthetic.render import ViewRender
from mvs.io import write_cam, write_image, write_mask, write_pfm

TEST_DIRS = ("images", "cams", "depths", "masks")


def depth_range(depths: list[np.ndarray], margin: tuple[float, float]) -> tuple[float, float] | None:
    """(floor(min * margin[0]), ceil(max * margin[1])) over the valid depths, None if none."""
    low, high = math.inf, -math.inf
    for depth in depths:
        valid = depth[depth > 0]
        if valid.size:
            low, high = min(low, float(valid.min())), max(high, float(valid.max()))
    if not math.isfinite(low):
        return None
    return float(math.floor(low * margin[0])), float(math.ceil(high * margin[1]))


def fallback_range(camera: Camera, target: np.ndarray) -> tuple[float, float]:
    """Depth range of a view that sees no surface: around the distance to the target."""
    distance = float(np.linalg.norm(camera.center - target))
    return float(math.floor(distance * 0.5)), float(math.ceil(distance * 1.5))


# ----------------------------------------------------------------------------- test layout
def prepare_test_layout(root: Path) -> None:
    for name in TEST_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)


def write_test_view(root: Path, view: int, camera: Camera, render: ViewRender, light: int,
                    depth_num: int, jpeg_quality: int) -> None:
    """One view of the test layout; ``camera`` already carries its final depth range."""
    write_image(root / "images" / f"{view:08d}.jpg", render.images[light], jpeg_quality=jpeg_quality)
    write_cam(root / "cams" / f"{view:08d}_cam.txt", camera, depth_num=depth_num)
    write_pfm(root / "depths" / f"{view:08d}.pfm", render.depth)
    write_mask(root / "masks" / f"{view:08d}.png", render.mask)


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------- training layout
def scan_dirs(root: Path, scan: int) -> tuple[Path, Path]:
    return root / "Rectified" / f"scan{scan}_train", root / "Depths" / f"scan{scan}_train"


def write_train_view(root: Path, scan: int, view: int, render: ViewRender) -> None:
    rectified, depths = scan_dirs(root, scan)
    for light, image in render.images.items():
        write_image(rectified / f"rect_{view + 1:03d}_{light}_r5000.png", image)
    write_pfm(depths / f"depth_map_{view:04d}.pfm", render.depth)
    write_mask(depths / f"depth_visual_{view:04d}.png", render.mask)


def write_train_cameras(root: Path, cameras: list[Camera], depth_num: int) -> None:
    folder = root / "Cameras" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    for view, camera in enumerate(cameras):
        write_cam(folder / f"{view:08d}_cam.txt", camera, depth_num=depth_num)
