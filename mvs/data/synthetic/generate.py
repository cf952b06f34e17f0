"""Generation of whole scenes and datasets: sample, render every view, write the files."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mvs.cameras import Camera
from mvs.data.synthetic.config import (
    KEY_GT,
    KEY_LIGHTS,
    KEY_OBJECTS,
    KEY_PAIRS,
    KEY_RIG,
    KEY_SCENE,
    SynthConfig,
    derive_seed,
    stream,
)
from mvs.data.synthetic.render import Renderer
from mvs.data.synthetic.rig import sample_rig
from mvs.data.synthetic.scene import CAMERA_CLEARANCE, SceneSpec, sample_lights, sample_scene
from mvs.data.synthetic.visibility import (
    SurfaceSamples,
    Views,
    occlusion_between_objects,
    sample_visible_surface,
)
from mvs.data.synthetic.workers import ViewOutput, ViewRenderer
from mvs.data.synthetic.writer import (
    depth_range,
    fallback_range,
    prepare_test_layout,
    scan_dirs,
    write_json,
    write_train_cameras,
)
from mvs.data.view_selection import select_views
from mvs.io import write_pair, write_point_cloud

FORMAT_VERSION = 1
PAIR_POINTS = 30_000  # surface samples scoring pair.txt (per scene)
OCCLUSION_HARD_CASE = 0.2  # measured inter-object occlusion that makes a scene "occlusion"
TRAIN_TARGET = np.array([0.0, 0.0, 70.0])  # where the shared training rig looks (mm)


def _recorded(config: SynthConfig) -> dict:
    """The settings that shape the output (not how many processes made it)."""
    settings = asdict(config)
    settings.pop("workers")
    return settings


class _Clock:
    """Seconds spent per stage, added into an optional dict."""

    def __init__(self, out: dict | None):
        self.out = out
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.out is not None:
            self.out[stage] = self.out.get(stage, 0.0) + now - self.last
        self.last = now


def _pair_samples(views: Views, seed: int, count: int = PAIR_POINTS) -> tuple[SurfaceSamples, np.ndarray]:
    """About ``count`` visible surface samples and their (V, N) visibility."""
    area = views.renderer.face_area[views.seen_triangles].sum()
    spacing = float(np.sqrt(max(area, 1e-6) / count))
    samples = sample_visible_surface(views, spacing, seed, KEY_PAIRS)
    return samples, views.matrix(samples)


def _describe_rig(cameras: list[Camera], target: np.ndarray) -> dict:
    distances = [float(np.linalg.norm(c.center - target)) for c in cameras]
    elevations = [float(np.degrees(np.arcsin((c.center - target)[2] / d)))
                  for c, d in zip(cameras, distances, strict=True)]
    return {
        "count": len(cameras),
        "distance_mm": [round(min(distances), 1), round(max(distances), 1)],
        "elevation_deg": [round(min(elevations), 1), round(max(elevations), 1)],
        "focal_px": round(float(np.mean([c.intrinsics[0, 0] for c in cameras])), 2),
    }


def _hard_cases(spec: SceneSpec, occlusion: list[float]) -> list[str]:
    cases = list(spec.hard_cases)
    if max(occlusion, default=0.0) > OCCLUSION_HARD_CASE and "occlusion" not in cases:
        cases.append("occlusion")
    return cases


def sample_scene_and_rig(config: SynthConfig, seed: int) -> tuple[SceneSpec, list[Camera]]:
    """The scene description and cameras (before their depth ranges) that ``seed`` makes."""
    spec = sample_scene(stream(seed, KEY_OBJECTS), config, light_rng=stream(seed, KEY_LIGHTS))
    obstacles = [(c, r + CAMERA_CLEARANCE) for c, r in (o.bounding_sphere for o in spec.objects)]
    return spec, sample_rig(stream(seed, KEY_RIG), config, spec.target, obstacles)


def sample_train_rig(config: SynthConfig, seed: int) -> tuple[list[Camera], list]:
    """The shared cameras (before their depth range) and lights of a training dataset."""
    lights = sample_lights(stream(seed, KEY_LIGHTS), config.lights)
    return sample_rig(stream(seed, KEY_RIG), config, TRAIN_TARGET), lights


def generate_scene(out_dir: Path, config: SynthConfig, seed: int, progress: bool = False,
                   timings: dict | None = None) -> Path:
    """Write one synthetic scene in the MVSNet test layout into ``out_dir``; return it.

    The same ``seed`` and ``config`` give byte-identical files. ``timings``, if given,
    receives the seconds spent per stage.
    """
    config.validate()
    with ViewRenderer(config) as view_renderer:
        return _generate_scene(Path(out_dir), config, seed, progress, timings, view_renderer)


def _generate_scene(out_dir: Path, config: SynthConfig, seed: int, progress: bool,
                    timings: dict | None, view_renderer: ViewRenderer) -> Path:
    clock = _Clock(timings)
    spec, cameras = sample_scene_and_rig(config, seed)
    renderer = Renderer(spec)
    prepare_test_layout(out_dir)
    clock.lap("scene")

    light = config.test_light_index
    output = ViewOutput("test", out_dir, (light,), target=tuple(float(x) for x in spec.target))
    depths, primitives = view_renderer.render(spec, renderer, cameras, seed, output, progress,
                                              desc=f"render {out_dir.name}")
    clock.lap("render+write views")

    views = Views(renderer, cameras, depths, primitives)
    samples, visibility = _pair_samples(views, seed)
    pairs = select_views(samples.points, visibility, np.array([c.center for c in cameras]),
                         config.num_sources)
    write_pair(out_dir / "pair.txt", pairs)
    occlusion = occlusion_between_objects(views, primitives, samples, visibility)
    clock.lap("pair.txt")

    gt_points, colors = view_renderer.surface_points(spec, views, config.gt_spacing, seed, KEY_GT,
                                                     config.gt_ground_margin)
    clock.lap("gt points")
    write_point_cloud(out_dir / "gt_points.ply", gt_points, colors)
    clock.lap("gt write")

    description = spec.describe()
    description["hard_cases"] = _hard_cases(spec, occlusion)
    meta = {
        "generator": "mvs synth",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "units": "mm",
        "layout": "test",
        "ground_plane": [0.0, 0.0, 1.0, 0.0],  # a x + b y + c z + d = 0: the table, +z up
        **description,
        "occlusion_fraction": {o.name: round(f, 4) for o, f in zip(spec.objects, occlusion, strict=True)},
        "test_light": light,
        "cameras": _describe_rig(cameras, spec.target),
        "gt_points": int(len(gt_points)),
        "config": _recorded(config),
    }
    write_json(out_dir / "scene.json", meta)
    clock.lap("scene.json")
    return out_dir


def _generate_train(out: Path, num_scenes: int, config: SynthConfig, seed: int, progress: bool,
                    view_renderer: ViewRenderer) -> list[Path]:
    """The DTU training layout: one rig and lighting, ``num_scenes`` scans of different objects."""
    cameras, lights = sample_train_rig(config, seed)
    target = TRAIN_TARGET
    centres = np.array([c.center for c in cameras])
    low, high = np.inf, -np.inf
    points, visibilities, scans, folders = [], [], [], []
    for scan in tqdm(range(1, num_scenes + 1), desc="scans", unit="scan", disable=not progress):
        scan_seed = derive_seed(seed, KEY_SCENE, scan)
        spec = sample_scene(stream(scan_seed, KEY_OBJECTS), config, lights=lights, cameras=centres)
        renderer = Renderer(spec)
        rectified, depth_dir = scan_dirs(out, scan)
        rectified.mkdir(parents=True, exist_ok=True)
        depth_dir.mkdir(parents=True, exist_ok=True)
        output = ViewOutput("train", out, tuple(range(config.lights)), scan=scan)
        depths, primitives = view_renderer.render(spec, renderer, cameras, scan_seed, output, progress,
                                                  desc=f"scan{scan}")
        limits = depth_range(depths, config.depth_margin)
        if limits is not None:
            low, high = min(low, limits[0]), max(high, limits[1])
        views = Views(renderer, cameras, depths, primitives)
        samples, visibility = _pair_samples(views, scan_seed, max(2000, PAIR_POINTS // num_scenes))
        points.append(samples.points)
        visibilities.append(visibility)
        occlusion = occlusion_between_objects(views, primitives, samples, visibility)
        description = spec.describe()
        description.pop("lights")
        description["hard_cases"] = _hard_cases(spec, occlusion)
        scans.append({"scan": scan, "seed": scan_seed, **description,
                      "occlusion_fraction": [round(f, 4) for f in occlusion]})
        folders.append(rectified)
    if not np.isfinite(low):
        low, high = fallback_range(cameras[0], target)
    rig = [c.with_depth_range(low, high, config.depth_num) for c in cameras]
    write_train_cameras(out, rig, config.depth_num)
    pairs = select_views(np.concatenate(points), np.concatenate(visibilities, axis=1), centres,
                         config.num_sources)
    write_pair(out / "Cameras" / "pair.txt", pairs)
    write_json(out / "synth_train.json", {
        "generator": "mvs synth",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "units": "mm",
        "layout": "train",
        "lights": [light.describe() for light in lights],
        "cameras": _describe_rig(rig, target),
        "depth_range": [low, high],
        "scans": scans,
        "config": _recorded(config),
    })
    return folders


def generate_dataset(out: Path, num_scenes: int, config: SynthConfig, seed: int, layout: str = "test",
                     progress: bool = True) -> list[Path]:
    """Write ``num_scenes`` synthetic scenes.

    ``layout="test"``: ``out/scene_{k:03d}/`` in the MVSNet test layout, scene k generated
    from a seed derived from ``seed`` and k. Returns the scene folders.

    ``layout="train"``: DTU's training layout in ``out`` (scans 1..num_scenes sharing one
    camera rig and one set of lighting conditions). Returns the scans' ``Rectified`` folders.
    """
    config.validate()
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    if layout not in ("test", "train"):
        raise ValueError(f"layout must be 'test' or 'train', got {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ViewRenderer(config) as view_renderer:
        if layout == "train":
            return _generate_train(out, num_scenes, config, seed, progress, view_renderer)
        folders = []
        for k in tqdm(range(num_scenes), desc="scenes", unit="scene", disable=not progress):
            folders.append(_generate_scene(out / f"scene_{k:03d}", config, derive_seed(seed, KEY_SCENE, k),
                                           progress, None, view_renderer))
        return folders
