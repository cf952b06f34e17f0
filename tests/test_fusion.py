import json

import numpy as np
import pytest
import torch

from mvs.cli import main as mvs_main
from mvs.data.scene import load_scene
from mvs.errors import MVSInputError
from mvs.fusion import FusionConfig, consistency_with_source, fuse_depth_maps, normal_map
from mvs.inference import read_depth_maps
from mvs.io import read_point_attributes, read_point_cloud, write_pfm
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


def test_read_depth_maps_takes_the_views_that_have_maps(tmp_path):
    make_plane_scene(tmp_path / "scene", views=3)
    scene = load_scene(tmp_path / "scene")
    recon = tmp_path / "recon"
    (recon / "depths").mkdir(parents=True)
    (recon / "confidence").mkdir()
    for view in (0, 2):
        write_pfm(recon / "depths" / f"{view:08d}.pfm", scene.depth(view))
    write_pfm(recon / "confidence" / "00000002.pfm", np.full_like(scene.depth(2), 0.75))
    depths, confidences = read_depth_maps(recon, scene)
    assert sorted(depths) == [0, 2] and list(confidences) == [2]
    np.testing.assert_array_equal(depths[0], scene.depth(0))
    assert float(confidences[2].mean()) == 0.75
    with pytest.raises(MVSInputError, match="no depth maps found"):
        read_depth_maps(tmp_path / "scene" / "cams", scene)


def test_mvs_fuse_reports_bad_input(tmp_path, capsys):
    make_plane_scene(tmp_path / "scene", views=2)
    (tmp_path / "empty").mkdir()
    assert mvs_main(["fuse", str(tmp_path / "empty"), str(tmp_path / "scene"), "--out", str(tmp_path / "x.ply")]) == 2
    assert "no depth maps found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- independent reference


def _bilinear_read(depth: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64 bilinear read of ``depth`` at (x, y); NaN unless the taps without depth (or off
    the image) weigh less than 1e-4 together."""
    height, width = depth.shape
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    value, support = np.zeros_like(x), np.zeros_like(x)
    finite = np.isfinite(x) & np.isfinite(y)
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = finite & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        tap = np.zeros_like(x)
        tap[inside] = depth[yi[inside].astype(int), xi[inside].astype(int)]
        value += np.where(inside, weight * tap, 0.0)
        support += np.where(inside & (tap > 0), weight, 0.0)
    return np.where(finite & (support > 1 - 1e-4) & (value > 0), value, np.nan)


def _reference_round_trip(ref_depth, ref_camera, src_depth, src_camera):
    """Straightforward float64 numpy round trip: world points, projection, bilinear read,
    back-projection. Returns (H, W) reprojection error and relative depth error (NaN where
    no round trip) and (H, W, 3) world points of the source."""
    height, width = ref_depth.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    depth = ref_depth.astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(ref_camera.intrinsics).T
    world = (rays * depth[..., None] - ref_camera.translation) @ ref_camera.rotation  # R^T (X_cam - t)
    cam_src = world @ src_camera.rotation.T + src_camera.translation
    pix = cam_src @ src_camera.intrinsics.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = pix[..., 0] / pix[..., 2], pix[..., 1] / pix[..., 2]
        front = cam_src[..., 2] > 1e-6
        read = _bilinear_read(src_depth.astype(np.float64), np.where(front, u, np.nan), np.where(front, v, np.nan))
        src_rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(src_camera.intrinsics).T
        src_world = (src_rays * read[..., None] - src_camera.translation) @ src_camera.rotation
        back_cam = src_world @ ref_camera.rotation.T + ref_camera.translation
        back = back_cam @ ref_camera.intrinsics.T
        bu, bv = back[..., 0] / back[..., 2], back[..., 1] / back[..., 2]
        reprojection = np.hypot(bu - xs, bv - ys)
        relative = np.abs(back_cam[..., 2] - depth) / depth
    ok = (depth > 0) & np.isfinite(read) & (back_cam[..., 2] > 1e-6)
    return np.where(ok, reprojection, np.nan), np.where(ok, relative, np.nan), src_world


def _noisy_plane_scene(root, views=6, noise=0.003, seed=0):
    """Plane scene whose depth maps carry relative noise and a few holes, like a network's."""
    make_plane_scene(root, views=views)
    scene = load_scene(root)
    rng = np.random.default_rng(seed)
    depths = {}
    for v in scene.view_ids:
        depth = scene.depth(v) * (1 + noise * rng.standard_normal(scene.depth(v).shape))
        depth[rng.random(depth.shape) < 0.02] = 0.0
        depths[v] = depth.astype(np.float32)
    return scene, depths


def test_round_trip_matches_an_independent_float64_computation(tmp_path):
    scene, depths = _noisy_plane_scene(tmp_path)
    cams = {v: scene.views[v].camera for v in (0, 1)}
    reprojection, relative, points = consistency_with_source(
        *(torch.as_tensor(depths[0]), cams[0].intrinsics_tensor(), cams[0].extrinsics_tensor()),
        *(torch.as_tensor(depths[1]), cams[1].intrinsics_tensor(), cams[1].extrinsics_tensor()),
    )
    ref_reprojection, ref_relative, ref_points = _reference_round_trip(depths[0], cams[0], depths[1], cams[1])
    ours, theirs = torch.isfinite(reprojection).numpy(), np.isfinite(ref_reprojection)
    assert ours.mean() > 0.6
    # Validity may differ only where a read lands within rounding of a pixel edge.
    assert (ours != theirs).sum() <= 2
    both = ours & theirs
    np.testing.assert_allclose(reprojection.numpy()[both], ref_reprojection[both], atol=2e-3)
    np.testing.assert_allclose(relative.numpy()[both], ref_relative[both], atol=2e-6)
    np.testing.assert_allclose(points.numpy()[both], ref_points[both], atol=2e-3)  # mm, at ~600 mm


def _reference_fixed_fusion(scene, depths, config):
    """float64 numpy version of the fixed-mode fusion: {view: (kept mask, kept points)}."""
    result = {}
    for ref in scene.view_ids:
        cam = scene.views[ref].camera
        errors = [
            _reference_round_trip(depths[ref], cam, depths[s], scene.views[s].camera)
            for s in scene.source_views(ref)[: config.num_source_views]
        ]
        count = np.zeros(depths[ref].shape)
        height, width = depths[ref].shape
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(cam.intrinsics).T
        total = (rays * depths[ref][..., None].astype(np.float64) - cam.translation) @ cam.rotation
        for reprojection, relative, points in errors:
            with np.errstate(invalid="ignore"):
                agree = (reprojection < config.reprojection_error) & (relative < config.relative_depth_error)
            count += agree
            total += np.where(agree[..., None], points, 0.0)
        kept = (depths[ref] > 0) & (count >= config.min_consistent_views)
        result[ref] = (kept, (total / (count + 1)[..., None])[kept])
    return result


def test_fusion_matches_an_independent_float64_fusion(tmp_path):
    # The fused cloud is the same as a plain float64 implementation's up to float32 rounding:
    # a handful of pixels whose round trip lies within rounding of a threshold may flip.
    scene, depths = _noisy_plane_scene(tmp_path)
    config = FusionConfig(min_consistent_views=2, relative_depth_error=0.004)
    cloud = fuse_depth_maps(scene, depths, config=config)
    reference = _reference_fixed_fusion(scene, depths, config)
    assert cloud.points.dtype == np.float32
    start = 0
    for stats in cloud.stats:
        kept, points = reference[stats.view]
        assert 0.3 * kept.size < kept.sum()
        assert abs(stats.kept_by_consistency - int(kept.sum())) <= 2
        ours = cloud.points[start:start + stats.kept_by_consistency]
        assert (cloud.source_view[start:start + stats.kept_by_consistency] == stats.view).all()
        start += stats.kept_by_consistency
        if len(ours) == len(points):
            close = np.abs(ours - points).max(1) < 1e-3
            assert close.mean() > 0.998
    assert start == len(cloud.points)


# ----------------------------------------------------------------------------- dynamic consistency


def _view0_kept(scene, depths, **options) -> int:
    cloud = fuse_depth_maps(scene, depths, config=FusionConfig(**options))
    return next(s.kept_by_consistency for s in cloud.stats if s.view == 0)


def test_dynamic_keeps_a_pixel_many_views_confirm_loosely(tmp_path):
    make_plane_scene(tmp_path, views=9)  # view 0 has 8 sources
    scene = load_scene(tmp_path)
    depths = {v: scene.depth(v) for v in scene.view_ids}
    depths[0] = depths[0] * 1.005  # every source agrees with view 0 within ~0.49% in depth
    pixels = depths[0].size
    # Fixed thresholds of 0.4%: no source agrees.
    assert _view0_kept(scene, depths, relative_depth_error=0.004) == 0
    # Dynamic, 0.1% per agreeing view: 8 sources agree within 0.5% (level 5 and up).
    dynamic = dict(consistency="dynamic", dynamic_relative_depth_error=0.001)
    assert _view0_kept(scene, depths, **dynamic) > 0.5 * pixels
    # With only 4 sources the highest level is 4 (0.4%): rejected again.
    assert _view0_kept(scene, depths, num_source_views=4, **dynamic) == 0


def test_dynamic_rejects_a_pixel_few_views_confirm_tightly(tmp_path):
    make_plane_scene(tmp_path, views=9)
    scene = load_scene(tmp_path)
    depths = {v: scene.depth(v) * (1.0025 if v in (1, 2) else 1.05) for v in scene.view_ids}
    depths[0] = scene.depth(0)  # sources 1, 2 agree within ~0.25%; the six others are 5% off
    pixels = depths[0].size
    assert _view0_kept(scene, depths, relative_depth_error=0.003, min_consistent_views=2) > 0.5 * pixels
    # Dynamic, 0.1% per view: two agreeing views must agree within 0.2%, three within 0.3%.
    dynamic = dict(consistency="dynamic", min_consistent_views=2)
    assert _view0_kept(scene, depths, dynamic_relative_depth_error=0.001, **dynamic) == 0
    # 0.13% per view: the two sources pass level 2 (0.26%).
    assert _view0_kept(scene, depths, dynamic_relative_depth_error=0.0013, **dynamic) > 0.5 * pixels
    # min_consistent_views is the lowest level: from 3 up, two sources are never enough.
    assert _view0_kept(scene, depths, dynamic_relative_depth_error=0.0013, consistency="dynamic",
                       min_consistent_views=3) == 0


def test_dynamic_mode_follows_its_rule_pixel_by_pixel(tmp_path):
    # Brute force from the round-trip errors: kept when for some n >= min_consistent_views
    # at least n sources have max(reprojection / step_px, relative / step_rel) < n; the point
    # is the mean of the reference point and the sources below the highest such n.
    scene, depths = _noisy_plane_scene(tmp_path, views=7, noise=0.001)
    config = FusionConfig(consistency="dynamic", min_consistent_views=2, dynamic_reprojection_error=0.1,
                          dynamic_relative_depth_error=0.0005)
    cloud = fuse_depth_maps(scene, depths, config=config)
    ref = 0
    cam = scene.views[ref].camera
    t = lambda v: (torch.as_tensor(depths[v]), scene.views[v].camera.intrinsics_tensor(),  # noqa: E731
                   scene.views[v].camera.extrinsics_tensor())
    results = [consistency_with_source(*t(ref), *t(s)) for s in scene.source_views(ref)]
    normalised = np.stack([np.maximum(r.numpy() / config.dynamic_reprojection_error,
                                      rel.numpy() / config.dynamic_relative_depth_error) for r, rel, _ in results])
    source_points = np.stack([p.numpy().astype(np.float64) for _, _, p in results])
    best = np.zeros(depths[ref].shape)
    for level in range(2, len(results) + 1):
        best = np.where((normalised < level).sum(0) >= level, level, best)
    kept = best > 0
    agree = normalised < best
    assert 0.05 * kept.size < kept.sum() < 0.95 * kept.size  # a real mix of kept and rejected
    levels = set(best[kept].astype(int).tolist())
    assert len(levels) >= 3  # pixels kept at several different levels
    height, width = depths[ref].shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(cam.intrinsics).T
    own = (rays * depths[ref][..., None].astype(np.float64) - cam.translation) @ cam.rotation
    expected = (own + (source_points * agree[..., None]).sum(0)) / (agree.sum(0) + 1)[..., None]
    stats = next(s for s in cloud.stats if s.view == ref)
    assert stats.kept_by_consistency == kept.sum()
    np.testing.assert_allclose(cloud.points[cloud.source_view == ref], expected[kept], atol=1e-3)


def test_fusion_config_rejects_unknown_modes():
    with pytest.raises(ValueError, match="consistency"):
        FusionConfig(consistency="adaptive")
    with pytest.raises(ValueError, match="> 0"):
        FusionConfig(dynamic_reprojection_error=0.0)


# ----------------------------------------------------------------------------- normals


def test_normals_on_a_plane_are_the_plane_normal(tmp_path):
    make_plane_scene(tmp_path)
    scene = load_scene(tmp_path)
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])  # tilted plane through 0
    depths = {v: plane_depth(scene.views[v].camera, normal, 0.0) for v in scene.view_ids}
    cloud = fuse_depth_maps(scene, depths, config=FusionConfig(min_consistent_views=2, normals=True))
    assert cloud.normals is not None and cloud.normals.shape == cloud.points.shape
    assert len(cloud.points) > 0.5 * 5 * 48 * 36
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0, atol=1e-5)
    # Every camera is on the +normal side of the plane: normals face them. (Within 1e-3: at
    # 48x36 pixels of ~7 mm, bilinear reads of a tilted plane's depth lie up to ~3e-3 mm off
    # the plane, and the averaged points with them.)
    np.testing.assert_allclose(cloud.normals, np.broadcast_to(normal, cloud.normals.shape), atol=1e-3)
    # The option adds normals and changes nothing else.
    plain = fuse_depth_maps(scene, depths, config=FusionConfig(min_consistent_views=2))
    assert plain.normals is None
    np.testing.assert_array_equal(plain.points, cloud.points)
    np.testing.assert_array_equal(plain.colors, cloud.colors)


def test_normals_ignore_depth_edges_and_face_the_camera():
    # Ground z = 0 with a block whose top is z = 50 for x >= 0: one-sided slopes keep the
    # normals of both surfaces straight up right at the edge; central differences would tilt
    # them. Camera off-centre and tilted, with skew, so no axis is special.
    from mvs.cameras import Camera, look_at
    from mvs.geometry import backproject_depth

    K = np.array([[100.0, 0.4, 32], [0, 104.0, 23], [0, 0, 1]])
    camera = Camera(K, look_at(np.array([40.0, 30.0, 600.0]), np.zeros(3), up=np.array([0.0, 1.0, 0.0])),
                    64, 48, 400, 800, 192)
    up = np.array([0.0, 0.0, 1.0])
    ground, top = plane_depth(camera, up, 0.0), plane_depth(camera, up, 50.0)
    K_t, E_t = camera.intrinsics_tensor(), camera.extrinsics_tensor()
    on_top = backproject_depth(torch.as_tensor(top)[None], K_t[None], E_t[None])[0, ..., 0].numpy() >= 0
    depth = torch.as_tensor(np.where(on_top, top, ground))
    depth[10:12, 5:8] = 0  # a hole: its neighbours use their other side
    assert 0.2 < on_top.mean() < 0.8
    R = torch.as_tensor(camera.rotation, dtype=torch.float32)
    points = backproject_depth(depth[None], K_t[None], torch.eye(4)[None])[0]  # camera frame
    normals = normal_map(points, R)
    valid = (depth > 0).numpy()
    np.testing.assert_allclose(normals.numpy()[valid], np.broadcast_to(up, (valid.sum(), 3)), atol=2e-4)
    # In the camera frame they are R up, facing the camera (negative z).
    camera_frame = normal_map(points).numpy()[valid]
    np.testing.assert_allclose(camera_frame, np.broadcast_to(camera.rotation @ up, camera_frame.shape), atol=2e-4)
    assert (camera_frame[:, 2] < 0).all()
    # A pixel without any neighbour with depth faces the camera.
    lone = torch.zeros_like(points)
    lone[20, 30] = points[20, 30]
    alone = normal_map(lone, R)[20, 30].numpy()
    point = backproject_depth(depth[None], K_t[None], E_t[None])[0, 20, 30].numpy()
    towards = camera.center - point
    np.testing.assert_allclose(alone, towards / np.linalg.norm(towards), atol=1e-5)


def test_mvs_fuse_writes_normals_and_source_view_when_asked(tmp_path):
    make_plane_scene(tmp_path / "scene")
    plain, rich = tmp_path / "plain.ply", tmp_path / "rich.ply"
    common = ["fuse", str(tmp_path / "scene"), str(tmp_path / "scene"), "--min-consistent-views", "2"]
    assert mvs_main(common + ["--out", str(plain)]) == 0
    assert mvs_main(common + ["--out", str(rich), "--normals", "--ply-source-view"]) == 0
    assert sorted(read_point_attributes(plain)) == ["colors", "positions"]  # the default is unchanged
    attributes = read_point_attributes(rich)
    assert sorted(attributes) == ["colors", "normals", "positions", "source_view"]
    points, colors = read_point_cloud(plain)
    np.testing.assert_array_equal(attributes["positions"], points)
    np.testing.assert_array_equal(attributes["colors"], colors)
    np.testing.assert_allclose(attributes["normals"], np.broadcast_to([0.0, 0.0, 1.0], points.shape), atol=2e-4)
    views = attributes["source_view"]
    assert views.dtype == np.int32 and set(views.tolist()) == set(range(5))
    assert np.all(np.diff(views) >= 0)  # written view by view


def test_mvs_fuse_dynamic_option(tmp_path, capsys):
    make_plane_scene(tmp_path / "scene")
    out = tmp_path / "dynamic.ply"
    args = ["fuse", str(tmp_path / "scene"), str(tmp_path / "scene"), "--out", str(out), "--consistency", "dynamic",
            "--min-consistent-views", "2"]
    assert mvs_main(args) == 0
    points, _ = read_point_cloud(out)
    assert len(points) > 0.5 * 5 * 48 * 36  # exact depths agree at every level
    assert mvs_main(args + ["--dynamic-reprojection-error", "-1"]) == 2
    assert "must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("consistency", ["fixed", "dynamic"])
def test_bands_do_not_change_the_result(tmp_path, monkeypatch, consistency):
    # On a CPU, reference pixels (and normal rows) go through in bands shared out to worker
    # threads; the cloud must be the same bit for bit whatever the band size.
    import mvs.fusion

    scene, depths = _noisy_plane_scene(tmp_path, noise=0.001)
    config = FusionConfig(min_consistent_views=2, consistency=consistency, normals=True)
    whole = fuse_depth_maps(scene, depths, config=config)
    monkeypatch.setattr(mvs.fusion, "_BAND_PIXELS", 97)  # ~17 bands per view, rows of 2 for normals
    banded = fuse_depth_maps(scene, depths, config=config)
    assert len(whole.points) > 0.3 * 6 * 48 * 36
    for name in ("points", "colors", "source_view", "normals"):
        np.testing.assert_array_equal(getattr(banded, name), getattr(whole, name))
    assert [s.kept_by_consistency for s in banded.stats] == [s.kept_by_consistency for s in whole.stats]


def test_mvs_reconstruct_passes_the_fusion_options(tmp_path):
    make_plane_scene(tmp_path / "scene", width=64, height=48)
    out = tmp_path / "recon"
    assert mvs_main(["reconstruct", str(tmp_path / "scene"), "--out", str(out), "--num-views", "3", "--no-previews",
                     "--consistency", "dynamic", "--min-consistent-views", "1", "--confidence-threshold", "0",
                     "--normals", "--ply-source-view"]) == 0
    summary = json.loads((out / "reconstruction.json").read_text())
    assert summary["config"]["fusion"]["consistency"] == "dynamic"
    attributes = read_point_attributes(out / "fused.ply")
    assert sorted(attributes) == ["colors", "normals", "positions", "source_view"]
    assert len(attributes["positions"]) == summary["fused_points"] > 0
    np.testing.assert_allclose(np.linalg.norm(attributes["normals"], axis=1), 1.0, atol=1e-5)
