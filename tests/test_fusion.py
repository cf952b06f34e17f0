import numpy as np
import torch

from mvs.cli import main as mvs_main
from mvs.data.scene import load_scene
from mvs.fusion import FusionConfig, consistency_with_source, fuse_depth_maps
from mvs.io import read_point_cloud
from tests.conftest import make_plane_scene, plane_depth


def test_exact_depths_fuse_onto_the_surface(tmp_path):
    make_plane_scene(tmp_path)
    scene = load_scene(tmp_path)
    depths = {v: scene.depth(v) for v in scene.view_ids}
    cloud = fuse_depth_maps(scene, depths, config=FusionConfig(min_consistent_views=2))
    assert len(cloud.points) > 0.5 * 5 * 48 * 36
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-2)  # on the plane z = 0
    assert cloud.colors.dtype == np.uint8 and cloud.colors.shape == cloud.points.shape
    assert sum(s.kept_by_consistency for s in cloud.stats) == len(cloud.points)


def test_inconsistent_view_is_filtered_out(tmp_path):
    make_plane_scene(tmp_path)
    scene = load_scene(tmp_path)
    depths = {v: scene.depth(v) for v in scene.view_ids}
    depths[2] = depths[2] * 1.05  # 5% off: disagrees with every other view
    cloud = fuse_depth_maps(scene, depths, config=FusionConfig(min_consistent_views=2))
    by_view = {s.view: s for s in cloud.stats}
    assert by_view[2].kept_by_consistency == 0
    assert by_view[0].kept_by_consistency > 0.5 * by_view[0].pixels
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-2)


def test_confidence_filter(tmp_path):
    make_plane_scene(tmp_path, views=3)
    scene = load_scene(tmp_path)
    depths = {v: scene.depth(v) for v in scene.view_ids}
    confidences = {v: np.zeros_like(d) for v, d in depths.items()}
    confidences[0][:, :24] = 1.0
    cloud = fuse_depth_maps(scene, depths, confidences, FusionConfig(min_consistent_views=1))
    stats = {s.view: s for s in cloud.stats}
    assert stats[0].kept_by_confidence == 36 * 24
    assert stats[1].kept_by_confidence == 0 and stats[1].kept_by_consistency == 0


def test_half_resolution_depth_maps_use_rescaled_cameras(tmp_path):
    make_plane_scene(tmp_path, width=64, height=48)
    scene = load_scene(tmp_path)
    depths = {v: plane_depth(scene.views[v].camera.resized(32, 24), np.array([0.0, 0.0, 1.0]), 0.0) for v in scene.view_ids}
    cloud = fuse_depth_maps(scene, depths, config=FusionConfig(min_consistent_views=2))
    assert len(cloud.points) > 0.5 * 5 * 32 * 24
    np.testing.assert_allclose(cloud.points[:, 2], 0.0, atol=1e-2)


def test_round_trip_error_is_zero_for_exact_depths(tmp_path):
    cameras = make_plane_scene(tmp_path, views=2)
    scene = load_scene(tmp_path)
    t = {v: (torch.as_tensor(scene.depth(v)), cameras[v].intrinsics_tensor(), cameras[v].extrinsics_tensor()) for v in (0, 1)}
    reprojection, relative, _ = consistency_with_source(*t[0], *t[1])
    finite = torch.isfinite(reprojection)
    assert finite.float().mean() > 0.5
    assert reprojection[finite].max() < 0.05 and relative[finite].max() < 1e-4


def test_mvs_fuse_command(tmp_path, capsys):
    make_plane_scene(tmp_path / "scene")
    out = tmp_path / "out" / "fused.ply"
    assert mvs_main(["fuse", str(tmp_path / "scene"), str(tmp_path / "scene"), "--out", str(out), "--min-consistent-views", "2"]) == 0
    points, colors = read_point_cloud(out)
    assert len(points) > 1000 and colors is not None
    assert out.with_suffix(".json").is_file()
    assert "fused" in capsys.readouterr().out


def test_mvs_fuse_reports_bad_input(tmp_path, capsys):
    make_plane_scene(tmp_path / "scene", views=2)
    (tmp_path / "empty").mkdir()
    assert mvs_main(["fuse", str(tmp_path / "empty"), str(tmp_path / "scene"), "--out", str(tmp_path / "x.ply")]) == 2
    assert "no depth maps found" in capsys.readouterr().err
