import shutil

import numpy as np
import pytest

from mvs.data.scene import DTUTrainLayout, load_blendedmvs_scene, load_mvsnet_scene, load_scene
from mvs.errors import MVSInputError
from mvs.io import write_cam, write_image, write_pair, write_pfm
from mvs.io.cam import CamFile
from tests.conftest import random_camera, shared_scene


def make_scene(root, views=3, width=32, height=24, seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "cams").mkdir()
    cameras = []
    for v in range(views):
        camera = random_camera(rng, width, height)
        cameras.append(camera)
        write_image(root / "images" / f"{v:08d}.png", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        write_cam(root / "cams" / f"{v:08d}_cam.txt", camera)
    write_pair(root / "pair.txt", {v: [(s, 1.0) for s in range(views) if s != v] for v in range(views)})
    return cameras


def test_loads_mvsnet_layout(tmp_path):
    cameras = make_scene(tmp_path)
    scene = load_mvsnet_scene(tmp_path)
    assert scene.view_ids == [0, 1, 2]
    assert scene.image_size == (32, 24)
    np.testing.assert_allclose(scene.views[1].camera.intrinsics, cameras[1].intrinsics)
    assert scene.source_views(0, 1) == [1]
    assert scene.image(2).shape == (24, 32, 3)
    assert not scene.has_ground_truth()


def test_attaches_ground_truth_when_present(tmp_path):
    make_scene(tmp_path, views=2)
    (tmp_path / "depths").mkdir()
    for v in range(2):
        write_pfm(tmp_path / "depths" / f"{v:08d}.pfm", np.full((24, 32), 600.0, np.float32))
    scene = load_scene(tmp_path)
    assert scene.has_ground_truth()
    assert scene.depth(1).shape == (24, 32)


@pytest.mark.parametrize(
    "damage, fragment, culprit",
    [
        (lambda r: (r / "cams" / "00000001_cam.txt").unlink(), "has no camera file 00000001_cam.txt", "cams"),
        (lambda r: (r / "images" / "00000002.png").unlink(), "00000002_cam.txt has no image", "images"),
        (lambda r: write_image(r / "images" / "00000001.png", np.zeros((20, 32, 3), np.uint8)), "all views of a scene must share one size", "00000001.png"),
        (lambda r: (r / "images" / "00000001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"), "not a readable image", "00000001.png"),
        (lambda r: write_pair(r / "pair.txt", {0: [(1, 1.0), (7, 1.0)]}), "source view 7", "pair.txt"),
        (lambda r: write_pair(r / "pair.txt", {9: [(1, 1.0)]}), "reference view 9", "pair.txt"),
        (lambda r: (r / "pair.txt").unlink(), "missing pair.txt", "pair.txt"),
        (lambda r: shutil.rmtree(r / "cams"), "missing folder", "cams"),
        (lambda r: (r / "cams" / "00000000_cam.txt").write_text("extrinsic\n1 0 0 0\n"), "ends inside the extrinsic", "00000000_cam.txt"),
    ],
)
def test_bad_scenes_fail_up_front_naming_the_file(tmp_path, damage, fragment, culprit):
    make_scene(tmp_path)
    damage(tmp_path)
    with pytest.raises(MVSInputError) as info:
        load_mvsnet_scene(tmp_path)
    assert fragment in str(info.value)
    assert culprit in str(info.value)


def test_intrinsics_for_another_resolution_are_caught(tmp_path):
    cameras = make_scene(tmp_path, views=2)
    big = cameras[0].resized(320, 240)  # cx now ~160: outside the 32x24 image
    write_cam(tmp_path / "cams" / "00000000_cam.txt", big)
    with pytest.raises(MVSInputError, match="another resolution"):
        load_mvsnet_scene(tmp_path)


def test_missing_scene_folder(tmp_path):
    with pytest.raises(MVSInputError, match="scene folder not found"):
        load_scene(tmp_path / "nowhere")


def make_dtu_train(root, quarter_res_cams: bool):
    rng = np.random.default_rng(2)
    width, height = 64, 48
    (root / "Rectified" / "scan3_train").mkdir(parents=True)
    (root / "Depths" / "scan3_train").mkdir(parents=True)
    (root / "Cameras" / "train").mkdir(parents=True)
    cameras = []
    for v in range(3):
        camera = random_camera(rng, width, height)
        cameras.append(camera)
        for light in range(2):
            write_image(root / "Rectified" / "scan3_train" / f"rect_{v + 1:03d}_{light}_r5000.png", np.full((height, width, 3), light * 100, np.uint8))
        write_pfm(root / "Depths" / "scan3_train" / f"depth_map_{v:04d}.pfm", np.full((height, width), 600.0, np.float32))
        cam = camera
        if quarter_res_cams:  # as MVSNet published them: K multiplied by 1/4
            K = camera.intrinsics.copy()
            K[:2] /= 4
            cam = CamFile(K, camera.extrinsics, camera.depth_min, camera.depth_max, 192)
        write_cam(root / "Cameras" / "train" / f"{v:08d}_cam.txt", cam)
    write_pair(root / "Cameras" / "pair.txt", {v: [(s, 1.0) for s in range(3) if s != v] for v in range(3)})
    return cameras


@pytest.mark.parametrize("quarter", [False, True])
def test_dtu_training_layout(tmp_path, quarter):
    cameras = make_dtu_train(tmp_path, quarter)
    layout = DTUTrainLayout(tmp_path)
    assert layout.scans == [3]
    assert layout.lights(3) == [0, 1]
    scene = layout.scene(3, light=1)
    assert scene.image(0).mean() == 100
    np.testing.assert_allclose(scene.views[2].camera.intrinsics, cameras[2].intrinsics, rtol=1e-6)
    assert scene.depth(1).shape == (48, 64)
    with pytest.raises(MVSInputError, match="image is missing"):
        layout.scene(3, light=5)


def test_blendedmvs_layout(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "blended_images").mkdir()
    (tmp_path / "cams").mkdir()
    (tmp_path / "rendered_depth_maps").mkdir()
    for v in range(2):
        write_image(tmp_path / "blended_images" / f"{v:08d}.jpg", np.zeros((24, 32, 3), np.uint8))
        write_cam(tmp_path / "cams" / f"{v:08d}_cam.txt", random_camera(rng, 32, 24))
        write_pfm(tmp_path / "rendered_depth_maps" / f"{v:08d}.pfm", np.ones((24, 32), np.float32))
    write_pair(tmp_path / "cams" / "pair.txt", {0: [(1, 1.0)], 1: [(0, 1.0)]})
    scene = load_blendedmvs_scene(tmp_path)
    assert scene.view_ids == [0, 1] and scene.has_ground_truth()
    assert load_scene(tmp_path).view_ids == [0, 1]


@pytest.mark.realdata
@pytest.mark.parametrize("name, views, size, unit_range", [
    ("dtu_scan24", 49, (1600, 1200), (100, 2000)),
    ("middlebury_templeSparseRing", 16, (640, 480), (0.1, 2.0)),
])
def test_real_scenes_load(name, views, size, unit_range):
    scene = load_scene(shared_scene(name))
    assert len(scene.views) == views and scene.image_size == size
    for view in scene.views.values():
        assert unit_range[0] < view.camera.depth_min < view.camera.depth_max < unit_range[1]


def test_source_views_leave_out_sources_scored_far_below_the_best(tmp_path):
    make_scene(tmp_path, views=5)
    write_pair(tmp_path / "pair.txt", {
        0: [(1, 200.0), (2, 190.0), (3, 1.0), (4, 0.0)],  # a sparse ring: two real neighbours
        1: [(v, float(10 - i)) for i, v in enumerate([0, 2, 3, 4])],  # DTU-style ranks
        2: [(v, 0.0) for v in (0, 1, 3, 4)],  # scores that say nothing
    })
    scene = load_scene(tmp_path)
    assert scene.source_views(0) == [1, 2, 3, 4]  # no fraction: the whole list, as before
    assert scene.source_views(0, min_relative_score=0.05) == [1, 2]
    assert scene.source_views(0, 1, min_relative_score=0.05) == [1]
    assert scene.source_views(0, min_relative_score=1.0) == [1]  # the best always stays
    assert scene.source_views(1, min_relative_score=0.05) == [0, 2, 3, 4]  # rank 7 is 70% of rank 10
    assert scene.source_views(1, min_relative_score=0.8) == [0, 2, 3]
    assert scene.source_views(2, min_relative_score=0.05) == [0, 1, 3, 4]  # no positive score: no pruning
