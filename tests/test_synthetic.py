"""The synthetic scene generator (``mvs synth``): geometry, files, determinism, layouts.

Scenes here are tiny (6 views of 160x128) so the file runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mvs.data.synthetic import SynthConfig, generate_dataset, generate_scene
from mvs.data.synthetic.generate import sample_scene_and_rig, sample_train_rig
from mvs.data.synthetic.render import Renderer
from mvs.errors import MVSInputError
from mvs.geometry import backproject_depth, project_points
from mvs.io import read_cam, read_image, read_mask, read_pair, read_pfm, read_point_cloud

VIEWS, WIDTH, HEIGHT = 6, 160, 128
SEED = 3  # four objects: occlusions between them


def tiny_config(**overrides) -> SynthConfig:
    settings = dict(views=VIEWS, width=WIDTH, height=HEIGHT, gt_spacing=1.0)
    settings.update(overrides)
    return SynthConfig(**settings)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return generate_scene(tmp_path_factory.mktemp("synth") / "scene", tiny_config(), seed=SEED)


def load_views(root: Path, views: int = VIEWS):
    cams = [read_cam(root / "cams" / f"{v:08d}_cam.txt") for v in range(views)]
    depths = [read_pfm(root / "depths" / f"{v:08d}.pfm").astype(np.float64) for v in range(views)]
    return cams, depths


def interpolate_depth(depth: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth at sub-pixel (x, y) by bilinear interpolation of *inverse* depth, which is
    exact on a plane (1/z is affine in pixel coordinates there). Returns (depth, ok) where
    ok needs all four surrounding pixel centres to hold a surface."""
    height, width = depth.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 < width - 1) & (y0 < height - 1)
    x0, y0 = np.clip(x0, 0, width - 2), np.clip(y0, 0, height - 2)
    corners = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]])
    ok &= np.all(corners > 0, axis=0)
    inverse = 1.0 / np.where(corners > 0, corners, 1.0)
    fx, fy = x - x0, y - y0
    value = (inverse[0] * (1 - fx) + inverse[1] * fx) * (1 - fy) + (inverse[2] * (1 - fx) + inverse[3] * fx) * fy
    return np.where(ok, 1.0 / value, 0.0), ok


# How close to a pixel centre a projection must land to be compared with that pixel.
WINDOW_PX = 0.1
# Depth agreement beyond the first-order change over the offset: float32 depths are exact
# to ~5e-5 mm at 800 mm, and the second-order (curvature) term over 0.1 px is below 1e-3 mm.
TOLERANCE_MM = 0.01


def agreement_at_pixel_centres(pixels: np.ndarray, z: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compare points with a depth map where they project within WINDOW_PX of a pixel centre.

    Pixel centres are exact samples, so nothing is interpolated across the creases of
    faceted objects. The pixel's depth must equal the point's depth up to the change of
    depth over the sub-pixel offset, bounded by 1.5x the larger one-sided difference to
    the neighbouring pixels in each axis (first order, plus as much again for curvature),
    plus TOLERANCE_MM. Only pixels where the depth map is continuous (3x3 range below 5 %
    of the depth: no silhouette, whose position within a pixel a depth map cannot tell)
    are compared.

    Returns (seen, agree) over the compared points: ``seen`` = the pixel holds a surface
    not clearly in front of the point (depth > z - 1 mm), i.e. the point is not occluded.
    """
    height, width = depth.shape
    x, y = pixels[:, 0], pixels[:, 1]
    xi, yi = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    dx, dy = x - xi, y - yi
    near = (z > 0) & (np.abs(dx) < WINDOW_PX) & (np.abs(dy) < WINDOW_PX)
    near &= (xi >= 1) & (xi < width - 1) & (yi >= 1) & (yi < height - 1)
    xi, yi, dx, dy, z = xi[near], yi[near], dx[near], dy[near], z[near]
    d = depth[yi, xi]
    window = np.stack([depth[yi + a, xi + b] for a in (-1, 0, 1) for b in (-1, 0, 1)])
    continuous = (window.min(axis=0) > 0) & (window.max(axis=0) - window.min(axis=0) < 0.05 * d)
    grad_x = np.maximum(np.abs(depth[yi, xi + 1] - d), np.abs(d - depth[yi, xi - 1]))
    grad_y = np.maximum(np.abs(depth[yi + 1, xi] - d), np.abs(d - depth[yi - 1, xi]))
    seen = continuous & (d > z - 1.0)
    agree = np.abs(d - z) <= TOLERANCE_MM + 1.5 * (np.abs(dx) * grad_x + np.abs(dy) * grad_y)
    return seen, agree


def project_numpy(cam, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = points @ cam.extrinsics[:3, :3].T + cam.extrinsics[:3, 3]
    pix = local @ cam.intrinsics.T
    return pix[:, :2] / local[:, 2:3], local[:, 2]


# ----------------------------------------------------------------------------- geometry
def test_cameras_and_depths_agree_across_views(scene):
    """Back-project view i's GT depth to the world (mvs.geometry), project into view j and
    compare with view j's GT depth where view j sees the same surface.

    Exact geometry agrees to ~1e-4 mm (float32); see agreement_at_pixel_centres for the
    tolerance. A half-pixel convention slip or ray length taken for z shifts depths by
    tenths of a millimetre or more on every surface not facing the camera square-on.
    """
    cams, depths = load_views(scene)
    pairs = read_pair(scene / "pair.txt")
    K = lambda c: torch.tensor(c.intrinsics)[None]  # noqa: E731
    E = lambda c: torch.tensor(c.extrinsics)[None]  # noqa: E731
    for i in range(VIEWS):
        world = backproject_depth(torch.tensor(depths[i])[None], K(cams[i]), E(cams[i]))[0]
        world = world[torch.from_numpy(depths[i] > 0)]  # (N, 3)
        seen_all, agree_all = [], []
        for j, _ in pairs[i][:3]:
            pixels, z = project_points(world[None], K(cams[j]), E(cams[j]))
            seen, agree = agreement_at_pixel_centres(pixels[0].numpy(), z[0].numpy(), depths[j])
            seen_all.append(seen)
            agree_all.append(agree)
        seen, agree = np.concatenate(seen_all), np.concatenate(agree_all)
        assert seen.sum() > 200, f"view {i} shares too little with its sources"
        assert agree[seen].mean() > 0.98, f"view {i}: {agree[seen].mean():.3f} of co-visible pixels agree"


def test_gt_points_lie_on_the_depth_maps(scene):
    """Project gt_points into every view; the visible ones sit on the GT depth."""
    cams, depths = load_views(scene)
    points, colors = read_point_cloud(scene / "gt_points.ply")
    assert colors is not None and len(points) > 10_000
    for cam, depth in zip(cams, depths, strict=True):
        pixels, z = project_numpy(cam, points)
        seen, agree = agreement_at_pixel_centres(pixels, z, depth)
        assert seen.sum() > 500
        assert agree[seen].mean() > 0.98, f"{agree[seen].mean():.3f} of visible gt points on the depth map"


def test_gt_points_are_seen_by_a_camera(scene):
    """Each gt point lies on, not behind, the surface some view sees (up to interpolation
    across silhouettes and the image border, which a few points near them suffer)."""
    cams, depths = load_views(scene)
    points, _ = read_point_cloud(scene / "gt_points.ply")
    best = np.full(len(points), np.inf)
    for cam, depth in zip(cams, depths, strict=True):
        pixels, z = project_numpy(cam, points)
        interpolated, ok = interpolate_depth(depth, pixels[:, 0], pixels[:, 1])
        best = np.minimum(best, np.where(ok & (z > 0), z - interpolated, np.inf))
    assert np.mean(best < 0.5) > 0.9


# ----------------------------------------------------------------------------- files
def test_every_file_reads_back(scene):
    config = tiny_config()
    spec, cameras = sample_scene_and_rig(config, SEED)
    for v, camera in enumerate(cameras):
        image = read_image(scene / "images" / f"{v:08d}.jpg")
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert 20 < image.mean() < 235  # neither black nor blown out
        depth = read_pfm(scene / "depths" / f"{v:08d}.pfm")
        assert depth.shape == (HEIGHT, WIDTH) and depth.dtype == np.float32
        mask = read_mask(scene / "masks" / f"{v:08d}.png")
        np.testing.assert_array_equal(mask, depth > 0)
        assert mask.mean() > 0.5
        cam = read_cam(scene / "cams" / f"{v:08d}_cam.txt")
        np.testing.assert_allclose(cam.intrinsics, camera.intrinsics, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cam.extrinsics, camera.extrinsics, rtol=1e-9, atol=1e-7)
        assert cam.depth_num == config.depth_num
        valid = depth[depth > 0]
        assert cam.depth_min == np.floor(valid.min() * 0.9)
        assert cam.depth_max == pytest.approx(np.ceil(valid.max() * 1.1))
        np.testing.assert_allclose(cam.intrinsics[0, 0], 2890.0 * WIDTH / 1600.0, rtol=0.02)
        distance = np.linalg.norm(camera.center - spec.target)
        assert 440.0 < distance < 860.0
    pairs = read_pair(scene / "pair.txt")
    assert sorted(pairs) == list(range(VIEWS))
    for ref, sources in pairs.items():
        assert 1 <= len(sources) <= VIEWS - 1
        assert ref not in [s for s, _ in sources]
        scores = [score for _, score in sources]
        assert scores == sorted(scores, reverse=True)
    points, colors = read_point_cloud(scene / "gt_points.ply")
    assert points.shape == colors.shape and colors.dtype == np.uint8
    meta = json.loads((scene / "scene.json").read_text())
    assert meta["seed"] == SEED and meta["units"] == "mm"
    assert meta["ground_plane"] == [0.0, 0.0, 1.0, 0.0]
    assert meta["gt_points"] == len(points)
    assert 1 <= len(meta["objects"]) <= 4
    assert len(meta["lights"]) == config.lights
    assert meta["config"]["views"] == VIEWS
    assert set(meta["hard_cases"]) <= {"low_texture", "thin_structure", "occlusion"}
    for obj in meta["objects"]:
        assert 140.0 < obj["size_mm"] < 310.0


def test_same_seed_same_bytes_other_seed_differs(scene, tmp_path):
    again = generate_scene(tmp_path / "again", tiny_config(), seed=SEED)
    files = sorted(p.relative_to(scene) for p in scene.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (scene / name).read_bytes() == (again / name).read_bytes(), name
    other = generate_scene(tmp_path / "other", tiny_config(), seed=SEED + 1)
    for v in range(VIEWS):
        assert (scene / "images" / f"{v:08d}.jpg").read_bytes() != (other / "images" / f"{v:08d}.jpg").read_bytes()
        assert not np.array_equal(read_pfm(scene / "depths" / f"{v:08d}.pfm"),
                                  read_pfm(other / "depths" / f"{v:08d}.pfm"))


def test_dataset_test_layout_derives_scene_seeds(tmp_path):
    config = tiny_config(views=3, width=64, height=48, gt_spacing=2.0)
    folders = generate_dataset(tmp_path, 2, config, seed=5, progress=False)
    assert [f.name for f in folders] == ["scene_000", "scene_001"]
    seeds = [json.loads((f / "scene.json").read_text())["seed"] for f in folders]
    assert seeds[0] != seeds[1]
    assert (folders[1] / "images" / "00000002.jpg").is_file()


def test_adaptive_antialiasing_matches_full_supersampling():
    """Supersampling only pixels next to edges gives nearly the image of supersampling all."""
    config = tiny_config()
    spec, cameras = sample_scene_and_rig(config, SEED)
    renderer = Renderer(spec)
    light = config.test_light_index
    adaptive = renderer.render_view(cameras[0], [light], np.random.default_rng(0), noise_sigma=0.0)
    full = renderer.render_view(cameras[0], [light], np.random.default_rng(0), noise_sigma=0.0,
                                full_supersampling=True)
    np.testing.assert_array_equal(adaptive.depth, full.depth)  # depth never depends on it
    difference = np.abs(adaptive.images[light].astype(int) - full.images[light].astype(int))
    assert 0.0 < adaptive.supersampled < 0.5
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 25


# ----------------------------------------------------------------------------- train layout
@pytest.fixture(scope="module")
def train_root(tmp_path_factory) -> Path:
    config = tiny_config(views=4, lights=2)
    root = tmp_path_factory.mktemp("train")
    generate_dataset(root, 2, config, seed=7, layout="train", progress=False)
    return root


def test_train_layout_file_names(train_root):
    expected = set()
    for scan in (1, 2):
        for v in range(4):
            for light in range(2):
                expected.add(f"Rectified/scan{scan}_train/rect_{v + 1:03d}_{light}_r5000.png")
            expected.add(f"Depths/scan{scan}_train/depth_map_{v:04d}.pfm")
            expected.add(f"Depths/scan{scan}_train/depth_visual_{v:04d}.png")
    for v in range(4):
        expected.add(f"Cameras/train/{v:08d}_cam.txt")
    expected |= {"Cameras/pair.txt", "synth_train.json"}
    found = {str(p.relative_to(train_root)) for p in train_root.rglob("*") if p.is_file()}
    assert found == expected


def test_train_scans_share_the_rig(train_root):
    config = tiny_config(views=4, lights=2)
    cameras, _ = sample_train_rig(config, seed=7)
    cams = [read_cam(train_root / "Cameras" / "train" / f"{v:08d}_cam.txt") for v in range(4)]
    for cam, camera in zip(cams, cameras, strict=True):
        np.testing.assert_allclose(cam.extrinsics, camera.extrinsics, atol=1e-7)
        np.testing.assert_allclose(cam.intrinsics, camera.intrinsics, atol=1e-9)
        assert (cam.depth_min, cam.depth_max) == (cams[0].depth_min, cams[0].depth_max)
    scans = []
    for scan in (1, 2):
        folder = train_root / "Depths" / f"scan{scan}_train"
        depths = [read_pfm(folder / f"depth_map_{v:04d}.pfm").astype(np.float64) for v in range(4)]
        for v, depth in enumerate(depths):
            assert depth.shape == (HEIGHT, WIDTH)
            np.testing.assert_array_equal(read_mask(folder / f"depth_visual_{v:04d}.png"), depth > 0)
            valid = depth[depth > 0]
            assert cams[v].depth_min <= valid.min() and valid.max() <= cams[v].depth_max
            image = read_image(train_root / "Rectified" / f"scan{scan}_train" / f"rect_{v + 1:03d}_0_r5000.png")
            assert image.shape == (HEIGHT, WIDTH, 3)
        # The shared cameras fit every scan's depth maps.
        for i, j in ((0, 1), (1, 0), (2, 3)):
            world = backproject_depth(torch.tensor(depths[i])[None], torch.tensor(cams[i].intrinsics)[None],
                                      torch.tensor(cams[i].extrinsics)[None])[0][torch.from_numpy(depths[i] > 0)]
            pixels, z = project_numpy(cams[j], world.numpy())
            seen, agree = agreement_at_pixel_centres(pixels, z, depths[j])
            assert seen.sum() > 50 and agree[seen].mean() > 0.98
        scans.append(depths[0])
    assert not np.array_equal(scans[0], scans[1])  # other objects
    pairs = read_pair(train_root / "Cameras" / "pair.txt")
    assert sorted(pairs) == [0, 1, 2, 3]
    meta = json.loads((train_root / "synth_train.json").read_text())
    assert [s["scan"] for s in meta["scans"]] == [1, 2]


def test_train_layout_loads(train_root):
    scene_module = pytest.importorskip("mvs.data.scene")
    layout = scene_module.DTUTrainLayout(train_root)
    assert layout.scans == [1, 2]
    loaded = layout.scene(2, light=1)
    assert loaded.image_size == (WIDTH, HEIGHT)
    cam = read_cam(train_root / "Cameras" / "train" / "00000000_cam.txt")
    np.testing.assert_allclose(loaded.views[0].camera.intrinsics, cam.intrinsics)


# ----------------------------------------------------------------------------- config
def test_invalid_config_is_refused(tmp_path):
    with pytest.raises(MVSInputError, match="views"):
        generate_scene(tmp_path, SynthConfig(views=1), seed=0)
    with pytest.raises(MVSInputError, match="gt_spacing"):
        generate_scene(tmp_path, SynthConfig(gt_spacing=0.0), seed=0)
    with pytest.raises(ValueError, match="layout"):
        generate_dataset(tmp_path, 1, tiny_config(), seed=0, layout="colmap", progress=False)
