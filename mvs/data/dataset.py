"""PyTorch datasets of multi-view samples (a reference view, its sources, GT depth).

A sample is a dict of tensors::

    images      (V, 3, H, W) float32 in [0, 1]; view 0 is the reference
    intrinsics  (V, 3, 3)    for the H x W images
    extrinsics  (V, 4, 4)    world-to-camera
    depth_min, depth_max ()  the reference camera's depth range, scene units
    depth       (H, W)       ground-truth reference depth (0 = unknown)
    mask        (H, W) bool  pixels with valid ground truth

Scenes come in *groups*: the same geometry under several lightings (DTU's 7 lights, or
the synthetic generator's). Training picks a lighting at random per sample; evaluation
uses a fixed one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mvs.cameras import Camera
from mvs.data.scene import DTUTrainLayout, Scene, load_scene
from mvs.errors import MVSInputError


@dataclass
class SampleConfig:
    num_views: int = 5  # reference + sources
    max_dim: int | None = None  # resize so the longer side is at most this (None: as stored)
    crop: tuple[int, int] | None = None  # (width, height) random crop (training) or centre crop
    source_pool: int = 10  # sources drawn from the best `source_pool` of pair.txt when augmenting
    augment: bool = False  # colour jitter, random lighting, random crop, random source choice
    multiple: int = 1  # round image sizes down to a multiple of this


def fit_size(width: int, height: int, max_dim: int | None, multiple: int = 1) -> tuple[int, int]:
    """Size after scaling the longer side down to ``max_dim`` and rounding to ``multiple``."""
    scale = 1.0 if max_dim is None else min(1.0, max_dim / max(width, height))
    new_w = max(multiple, int(round(width * scale)) // multiple * multiple)
    new_h = max(multiple, int(round(height * scale)) // multiple * multiple)
    return new_w, new_h


def resize_view(
    image: np.ndarray, camera: Camera, width: int, height: int, depth: np.ndarray | None = None
) -> tuple[np.ndarray, Camera, np.ndarray | None]:
    """Resize an image (area filter), its camera and optionally its depth (nearest)."""
    if (image.shape[1], image.shape[0]) != (width, height):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if depth is not None and (depth.shape[1], depth.shape[0]) != (width, height):
        # Nearest keeps depth edges sharp; sample at the resized pixel centres.
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, camera.resized(width, height), depth


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and gamma on a (H, W, 3) float image in [0, 1]."""
    image = image * rng.uniform(0.7, 1.3)
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * rng.uniform(0.7, 1.3) + grey
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


class MVSDataset(Dataset):
    """Samples from groups of scenes; each item is one reference view of one group.

    Args:
        groups: list of scene groups; every scene in a group has the same views and
            cameras (it differs by lighting only). Scenes need ground-truth depth.
        config: sampling options.
        seed: base seed of the augmentation random stream.
    """

    def __init__(self, groups: list[list[Scene]], config: SampleConfig | None = None, seed: int = 0):
        self.groups = groups
        self.config = config or SampleConfig()
        self.seed = seed
        self.epoch = 0
        self.items: list[tuple[int, int]] = []
        for g, group in enumerate(groups):
            if not group:
                raise ValueError(f"scene group {g} is empty")
            scene = group[0]
            if not scene.has_ground_truth():
                raise MVSInputError("training needs ground-truth depth for every view", scene.root)
            for ref in scene.view_ids:
                if len(scene.source_views(ref)) >= 1:
                    self.items.append((g, ref))
        if not self.items:
            raise MVSInputError("no reference view has source views in pair.txt", groups[0][0].root if groups else None)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call once per epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        g, ref = self.items[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        group = self.groups[g]
        scene = group[rng.integers(len(group))] if cfg.augment else group[len(group) // 2]

        sources = scene.source_views(ref)
        wanted = cfg.num_views - 1
        if cfg.augment and len(sources) > wanted:
            pool = sources[: max(wanted, cfg.source_pool)]
            sources = list(rng.choice(pool, size=wanted, replace=False))
        else:
            sources = sources[:wanted]
        # Repeat sources when pair.txt has fewer than asked, so batches keep one shape.
        while len(sources) < wanted:
            sources = sources + sources[: wanted - len(sources)]
        view_ids = [ref] + [int(s) for s in sources]

        width, height = fit_size(*scene.image_size, cfg.max_dim, cfg.multiple)
        images, cameras = [], []
        depth = None
        for k, vid in enumerate(view_ids):
            camera = scene.views[vid].camera
            if k == 0:
                gt = scene.depth(vid)
                if scene.views[vid].mask_path is not None:
                    gt = np.where(scene.mask(vid), gt, 0.0).astype(np.float32)
                if gt.shape[::-1] != scene.image_size:
                    # Depth stored at another resolution (e.g. DTU's quarter-size maps).
                    gt = cv2.resize(gt, scene.image_size, interpolation=cv2.INTER_NEAREST)
                image, camera, depth = resize_view(scene.image(vid), camera, width, height, gt)
            else:
                image, camera, _ = resize_view(scene.image(vid), camera, width, height)
            image = image.astype(np.float32) / 255.0
            if cfg.augment:
                image = colour_jitter(image, rng)
            images.append(image)
            cameras.append(camera)

        if cfg.crop is not None:
            crop_w, crop_h = min(cfg.crop[0], width), min(cfg.crop[1], height)
            if cfg.augment:
                x0, y0 = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
            else:
                x0, y0 = (width - crop_w) // 2, (height - crop_h) // 2
            images = [im[y0 : y0 + crop_h, x0 : x0 + crop_w] for im in images]
            cameras = [c.cropped(x0, y0, crop_w, crop_h) for c in cameras]
            depth = depth[y0 : y0 + crop_h, x0 : x0 + crop_w]

        mask = depth > 0
        reference = cameras[0]
        return {
            "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "intrinsics": torch.from_numpy(np.stack([c.intrinsics for c in cameras])).float(),
            "extrinsics": torch.from_numpy(np.stack([c.extrinsics for c in cameras])).float(),
            "depth_min": torch.tensor(reference.depth_min, dtype=torch.float32),
            "depth_max": torch.tensor(reference.depth_max, dtype=torch.float32),
            "depth": torch.from_numpy(np.ascontiguousarray(depth)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
        }


def load_groups(path: str | Path) -> list[list[Scene]]:
    """Scene groups from a folder: a DTU training layout, one scene, or a folder of scenes.

    * DTU training layout (``Rectified/``, ``Cameras/``): one group per scan, one scene per light.
    * A scene folder (MVSNet test layout or BlendedMVS): one group of one scene.
    * A folder of scene folders (what ``mvs synth --scenes N`` writes): one group each.
    """
    path = Path(path)
    if not path.is_dir():
        raise MVSInputError("training data folder not found", path)
    if (path / "Rectified").is_dir():
        layout = DTUTrainLayout(path)
        return [[layout.scene(scan, light) for light in layout.lights(scan)] for scan in layout.scans]
    if (path / "cams").is_dir() or (path / "blended_images").is_dir():
        return [[load_scene(path)]]
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and ((p / "cams").is_dir() or (p / "blended_images").is_dir()))
    if not subdirs:
        raise MVSInputError(
            "no scenes found: expected a DTU training layout, a scene folder, or a folder of scenes", path
        )
    return [[load_scene(p)] for p in subdirs]


def split_groups(groups: list[list[Scene]], validation_fraction: float) -> tuple[list, list]:
    """Hold out the last ``validation_fraction`` of groups (at least one if there are two)."""
    if len(groups) < 2 or validation_fraction <= 0:
        return groups, []
    count = max(1, math.floor(len(groups) * validation_fraction))
    return groups[:-count], groups[-count:]
