"""Tests of the cascade cost-volume network (mvs/models)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvs.cameras import Camera
from mvs.models import (
    CascadeMVSNet,
    CostRegularization,
    CostVolume,
    FeaturePyramid,
    ModelConfig,
    base_interval,
    cascade_loss,
    depth_metrics,
    depth_regression,
    downsample_nearest,
    group_correlation,
    initial_hypotheses,
    refined_hypotheses,
    scale_intrinsics,
    window_confidence,
)
from mvs.models.hypotheses import from_param, to_param
from mvs.parallel import run_bands
from mvs.warping import warp_features, warp_source_to_reference
from tests.conftest import random_camera

# ---------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread is as fast and immune to other processes' load
    (OpenMP fork/join per op stalls badly when another process holds a core). Tests of the
    threaded band path ask for two threads themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_rig(batch: int, views: int, height: int, width: int, scale: float = 1.0, seed: int = 0):
    """Random images and a forward-looking rig with sideways baselines (units: ``scale``)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, views, 3, height, width, generator=generator)
    focal = 1.2 * width
    K = torch.tensor([[focal, 0.3, width / 2], [0.0, focal * 1.01, height / 2], [0.0, 0.0, 1.0]])
    intrinsics = K.expand(batch, views, 3, 3).clone()
    extrinsics = torch.eye(4).repeat(batch, views, 1, 1)
    for v in range(1, views):
        extrinsics[:, v, 0, 3] = 40.0 * scale * (1 if v % 2 else -1) * ((v + 1) // 2)
        extrinsics[:, v, 1, 3] = 5.0 * scale * v
    depth_min = torch.tensor([400.0, 500.0][:batch]) * scale
    depth_max = torch.tensor([900.0, 1100.0][:batch]) * scale
    return images, intrinsics, extrinsics, depth_min, depth_max


def render_plane_scene(width: int = 64, height: int = 48, views: int = 3, scale: float = 1.0):
    """A randomly textured slanted plane seen by translated cameras; analytic GT depth.

    World = reference camera frame; all cameras share the reference's orientation. The
    plane is z = z0 + a x + b y, the texture a smooth random RGB field on its (x, y).

    Returns images (1, V, 3, H, W), intrinsics (1, V, 3, 3), extrinsics (1, V, 4, 4),
    depth (1, H, W), depth_min (1,), depth_max (1,), everything in units of ``scale``.
    """
    generator = torch.Generator().manual_seed(7)
    f64 = torch.float64
    focal = 1.1 * width
    K = torch.tensor(
        [[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]], dtype=f64
    )
    z0, a, b = 10.0, 0.25, -0.15
    normal = torch.tensor([-a, -b, 1.0], dtype=f64)
    texture = F.interpolate(
        torch.rand(1, 3, 48, 48, generator=generator, dtype=f64), size=(192, 192), mode="bilinear"
    )
    half_extent = 4.0  # the texture covers plane x, y in [-4, 4]
    centres = [[0.0, 0.0, 0.0], [0.8, 0.1, 0.0], [-0.7, -0.2, 0.1], [0.1, 0.7, 0.0]][:views]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=f64), torch.arange(width, dtype=f64), indexing="ij"
    )
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(K).T  # (H, W, 3)
    images, extrinsics = [], []
    for centre in centres:
        centre = torch.tensor(centre, dtype=f64)
        E = torch.eye(4, dtype=f64)
        E[:3, 3] = -centre * scale
        t = (z0 - normal @ centre) / (rays @ normal)  # (H, W) ray parameter
        points = centre + t[..., None] * rays  # (H, W, 3) on the plane
        grid = (points[..., :2] / half_extent)[None]  # (1, H, W, 2)
        images.append(F.grid_sample(texture, grid, align_corners=False)[0])
        extrinsics.append(E)
    depth = (z0 / (rays @ normal)) * scale  # reference: z = t * 1 (rays have z = 1)
    return (
        torch.stack(images)[None].float(),
        K[None, None].expand(1, views, 3, 3).float().clone(),
        torch.stack(extrinsics)[None].float(),
        depth[None].float(),
        torch.tensor([7.0 * scale]),
        torch.tensor([14.0 * scale]),
    )


def tiny_config(**overrides) -> ModelConfig:
    fields = {"hypotheses": (16, 8, 4), "stage_loss_weights": (0.5, 1.0, 2.0)}
    fields.update(overrides)
    return ModelConfig(**fields)


# ---------------------------------------------------------------------------- config


def test_config_round_trips_through_asdict_and_json():
    config = ModelConfig(hypotheses=(32, 16, 8), visibility_weights=True, inverse_depth=True)
    assert ModelConfig(**dataclasses.asdict(config)) == config
    as_json = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples become lists
    rebuilt = ModelConfig(**as_json)
    assert rebuilt == config and isinstance(rebuilt.hypotheses, tuple)
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "bad",
    [
        {"num_stages": 4},
        {"hypotheses": (48, 16)},
        {"groups": (5, 4, 4)},
        {"aggregation": "mean"},
        {"interval_ratios": (4.0, 0.0, 1.0)},
        {"hypotheses": (1, 16, 8)},
    ],
)
def test_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"bogus": 1})


# ---------------------------------------------------------------------------- geometry


def test_scale_intrinsics_matches_camera_resized(rng):
    camera = random_camera(rng, 64, 48)
    for stride in (1, 2, 4):
        expected = camera.resized(64 // stride, 48 // stride).intrinsics
        got = scale_intrinsics(torch.as_tensor(camera.intrinsics)[None], 1 / stride, 1 / stride)[0]
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_warp_features_matches_mvs_warping(seed):
    rng = np.random.default_rng(seed)
    ref = random_camera(rng, 20, 15)
    from mvs.cameras import look_at

    src = Camera(
        ref.intrinsics * [[1.02], [0.99], [1]],
        look_at(ref.center + rng.normal(size=3) * 40, np.zeros(3)),
        18,
        14,
        1,
        2000,
    )
    K = torch.stack([torch.as_tensor(c.intrinsics) for c in (ref, src)])
    E = torch.stack([torch.as_tensor(c.extrinsics) for c in (ref, src)])
    features = torch.as_tensor(rng.normal(size=(1, 3, 14, 18)))
    depths = torch.as_tensor(rng.uniform(450, 750, size=(1, 4, 15, 20)))
    expected, expected_valid = warp_source_to_reference(
        features, K[:1], E[:1], K[1:], E[1:], depths
    )
    warped, valid = warp_features(features, K[:1], E[:1], K[1:], E[1:], depths)
    assert (valid == expected_valid).float().mean() > 0.99
    both = valid & expected_valid
    assert both.float().mean() > 0.3
    torch.testing.assert_close(warped[:, :, both[0]], expected[:, :, both[0]], atol=1e-9, rtol=0)
    assert (warped[:, :, ~valid[0]] == 0).all()  # invalid samples are exactly zero


def test_warp_features_gradients():
    K = torch.tensor([[[8.0, 0.1, 4.0], [0.0, 8.0, 3.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    E0 = torch.eye(4, dtype=torch.float64)[None]
    E1 = E0.clone()
    E1[0, 0, 3] = -0.3
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 2, 6, 8, dtype=torch.float64, generator=generator).requires_grad_()
    depths = (
        torch.rand(1, 3, 6, 8, dtype=torch.float64, generator=generator) * 2 + 3
    ).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f, d: warp_features(f, K, E0, K, E1, d)[0], (features, depths), eps=1e-6, atol=1e-5
    )


# ---------------------------------------------------------------------------- hypotheses


@pytest.mark.parametrize("inverse", [False, True])
def test_initial_hypotheses_cover_the_range_exactly(inverse):
    depth_min, depth_max = torch.tensor([425.0, 0.5]), torch.tensor([935.0, 80.0])
    hyps = initial_hypotheses(depth_min, depth_max, 48, 5, 7, inverse)
    assert hyps.shape == (2, 48, 5, 7)
    assert torch.equal(hyps[:, 0], depth_min[:, None, None].expand(2, 5, 7))
    assert torch.equal(hyps[:, -1], depth_max[:, None, None].expand(2, 5, 7))
    assert (hyps.diff(dim=1) > 0).all()
    param = -1.0 / hyps.double() if inverse else hyps.double()
    steps = param.diff(dim=1)
    torch.testing.assert_close(steps, steps[:, :1].expand_as(steps), rtol=1e-4, atol=0)


@pytest.mark.parametrize("inverse", [False, True])
def test_refined_hypotheses_are_centred_with_the_stage_spacing(inverse):
    depth_min, depth_max = torch.tensor([425.0]), torch.tensor([935.0])
    interval = base_interval(depth_min, depth_max, 48, 4.0, inverse) * 2.0  # stage 2
    previous = torch.full((1, 3, 4), 700.0)
    previous[0, 0, 0] = 426.0  # near the near end
    previous[0, 0, 1] = 934.0  # near the far end
    hyps = refined_hypotheses(previous, depth_min, depth_max, 16, interval, inverse)
    assert hyps.shape == (1, 16, 3, 4)
    assert (hyps >= depth_min).all() and (hyps <= depth_max).all() and (hyps > 0).all()
    param = -1.0 / hyps.double() if inverse else hyps.double()
    torch.testing.assert_close(
        param.diff(dim=1),
        torch.full((1, 15, 3, 4), float(interval), dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    )
    # Interior pixels: centred on the previous depth (mean of a symmetric window).
    centre = param[0, :, 1:, :].mean(0)
    expected = -1.0 / 700.0 if inverse else 700.0
    torch.testing.assert_close(centre, torch.full_like(centre, expected), rtol=1e-5, atol=0)
    # Boundary pixels: shifted (not squeezed) to touch the range.
    torch.testing.assert_close(hyps[0, 0, 0, 0], depth_min[0])
    torch.testing.assert_close(hyps[0, -1, 0, 1], depth_max[0])


def test_refined_hypotheses_wider_than_the_range_are_squeezed_into_it():
    depth_min, depth_max = torch.tensor([1.0]), torch.tensor([2.0])
    hyps = refined_hypotheses(
        torch.full((1, 2, 2), 1.5), depth_min, depth_max, 8, torch.tensor([0.5])
    )
    torch.testing.assert_close(hyps[0, :, 0, 0], torch.linspace(1.0, 2.0, 8))


# ---------------------------------------------------------------------------- cost volume


def plane_features(channels=8, height=20, width=32, disparity=4, seed=0):
    """Reference features and those of a camera translated by +x so that a fronto-parallel
    plane shows a whole-pixel disparity: source(x) = reference(x + disparity)."""
    generator = torch.Generator().manual_seed(seed)
    wide = torch.randn(1, channels, height, width + 2 * disparity, generator=generator)
    reference = wide[..., disparity : disparity + width]
    shifted_right = wide[..., 2 * disparity :]  # camera at +b sees the texture moved left
    shifted_left = wide[..., :width]  # camera at -b
    return reference, shifted_right, shifted_left


def plane_cameras(height=20, width=32, focal=40.0, baseline=2.0, depth=20.0, sources=(1.0,)):
    """Identity-orientation cameras; sources at x = +-baseline; disparity f*b/Z (4 px)."""
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    ref_E = torch.eye(4)[None]
    src_E = torch.eye(4).repeat(1, len(sources), 1, 1)
    for i, side in enumerate(sources):
        src_E[0, i, 0, 3] = -side * baseline  # centre at side * baseline
    return K[None], ref_E, K[None, None].expand(1, len(sources), 3, 3), src_E


@pytest.mark.parametrize("aggregation", ["groupwise", "variance"])
@pytest.mark.parametrize("grad", [False, True])
def test_aggregation_peaks_at_the_true_depth(aggregation, grad):
    reference, right, left = plane_features()
    ref_K, ref_E, src_K, src_E = plane_cameras(sources=(1.0, -1.0))
    true_depth = 40.0 * 2.0 / 4  # f * b / disparity = 20
    depths = torch.tensor([12.0, 15.0, 17.5, true_depth, 22.5, 26.0, 32.0])
    hyps = depths[None, :, None, None].expand(1, 7, 20, 32)
    volume = CostVolume(8, 4, aggregation, band_bytes=4 * 8 * 7 * 32 * 3)  # several bands
    with torch.set_grad_enabled(grad):
        cost, visibility = volume(
            reference, torch.stack([right, left], 1), ref_K, ref_E, src_K, src_E, hyps
        )
    assert visibility is None
    assert cost.shape == (1, volume.out_channels, 7, 20, 32)
    assert torch.isfinite(cost).all()
    score = cost.mean(1) if aggregation == "groupwise" else -cost.mean(1)  # (1, D, H, W)
    best = score.argmax(1)[0, :, 6:-6]  # away from the borders
    assert (best == 3).float().mean() > 0.95


def test_banded_threaded_path_equals_autograd_path():
    torch.set_num_threads(2)  # bands shared out to two worker threads
    reference, right, left = plane_features(seed=3)
    ref_K, ref_E, src_K, src_E = plane_cameras(sources=(1.0, -1.0))
    hyps = torch.linspace(12, 32, 5)[None, :, None, None] + torch.rand(1, 5, 20, 32)
    for aggregation in ("groupwise", "variance"):
        for visibility in (False, True):
            torch.manual_seed(0)
            volume = CostVolume(8, 4, aggregation, visibility, band_bytes=4 * 8 * 5 * 32 * 2)
            sources = torch.stack([right, left], 1)
            cost, vis = volume(reference, sources, ref_K, ref_E, src_K, src_E, hyps)
            with torch.inference_mode():
                cost_fast, vis_fast = volume(reference, sources, ref_K, ref_E, src_K, src_E, hyps)
            torch.testing.assert_close(cost_fast, cost.detach(), atol=1e-5, rtol=1e-5)
            if visibility:
                torch.testing.assert_close(vis_fast, vis.detach(), atol=1e-6, rtol=1e-6)


def test_run_bands_covers_every_band_once_and_restores_threads():
    torch.set_num_threads(2)
    seen = torch.zeros(37, dtype=torch.int64)
    threads = torch.get_num_threads()

    def mark(y0, y1):
        seen[y0:y1] += 1

    run_bands(mark, [(y, min(37, y + 5)) for y in range(0, 37, 5)])
    assert (seen == 1).all()
    assert torch.get_num_threads() == threads


def test_visibility_weights_are_in_unit_range():
    reference, right, left = plane_features()
    ref_K, ref_E, src_K, src_E = plane_cameras(sources=(1.0, -1.0))
    hyps = torch.linspace(12, 32, 6)[None, :, None, None].expand(1, 6, 20, 32)
    volume = CostVolume(8, 4, "groupwise", visibility=True)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            cost, visibility = volume(
                reference, torch.stack([right, left], 1), ref_K, ref_E, src_K, src_E, hyps
            )
        assert visibility.shape == (1, 2, 20, 32)
        assert (visibility >= 0).all() and (visibility <= 1).all()
        assert torch.isfinite(cost).all()


def test_pixels_seen_by_no_source_give_zero_finite_cost():
    reference, right, _ = plane_features()
    ref_K, ref_E, src_K, src_E = plane_cameras()
    src_E = src_E.clone()
    src_E[0, 0, 2, 3] = -100.0  # the source sits 100 units in front: everything is behind it
    hyps = torch.linspace(12, 32, 4)[None, :, None, None].expand(1, 4, 20, 32)
    for aggregation in ("groupwise", "variance"):
        for visibility in (False, True):
            volume = CostVolume(8, 4, aggregation, visibility)
            for grad in (True, False):
                with torch.set_grad_enabled(grad):
                    cost, _ = volume(reference, right[:, None], ref_K, ref_E, src_K, src_E, hyps)
                assert torch.isfinite(cost).all()
                assert (cost == 0).all()  # no source: zero correlation / zero variance


def test_group_correlation_matches_definition():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 8, 5, 6, generator=generator)
    warped = torch.randn(2, 8, 3, 5, 6, generator=generator)
    expected = (warped * reference[:, :, None]).view(2, 4, 2, 3, 5, 6).mean(2)
    torch.testing.assert_close(group_correlation(reference, warped, 4), expected)
    torch.testing.assert_close(
        group_correlation(reference, warped.clone(), 4, inplace=True), expected
    )
    torch.testing.assert_close(
        group_correlation(reference, warped, 8), warped * reference[:, :, None]
    )


# ---------------------------------------------------------------------------- networks


@pytest.mark.parametrize("shape", [(7, 16, 12), (5, 9, 13), (1, 4, 4)])
def test_regularization_handles_odd_sizes(shape):
    net = CostRegularization(4, 4)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        scores = net(torch.randn(2, 4, *shape))
        assert scores.shape == (2, *shape)


def test_feature_pyramid_shapes():
    net = FeaturePyramid((16, 8, 4)).eval()
    outputs = net(torch.randn(3, 3, 32, 48))
    assert [tuple(o.shape) for o in outputs] == [(3, 16, 8, 12), (3, 8, 16, 24), (3, 4, 32, 48)]


# ---------------------------------------------------------------------------- depth head


@pytest.mark.parametrize("inverse", [False, True])
def test_one_hot_scores_give_that_hypothesis(inverse):
    hyps = initial_hypotheses(torch.tensor([2.0]), torch.tensor([10.0]), 12, 3, 4, inverse)
    index = torch.tensor([[0, 5, 11, 3], [7, 1, 10, 2], [4, 4, 6, 9]])
    scores = torch.full((1, 12, 3, 4), -1e4).scatter_(1, index[None, None], 1e4)
    out = depth_regression(scores.half(), hyps)  # float16 logits: softmax runs in float32
    expected = torch.gather(hyps, 1, index[None, None])[:, 0]
    torch.testing.assert_close(out["depth"], expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(out["confidence"], torch.ones(1, 3, 4), atol=1e-5, rtol=0)
    assert out["probability"].dtype == torch.float32


def test_confidence_is_the_mass_of_four_hypotheses():
    hyps = initial_hypotheses(torch.tensor([1.0]), torch.tensor([2.0]), 10, 1, 1)
    uniform = depth_regression(torch.zeros(1, 10, 1, 1), hyps)
    torch.testing.assert_close(uniform["confidence"], torch.full((1, 1, 1), 0.4))
    torch.testing.assert_close(uniform["depth"], torch.full((1, 1, 1), 1.5))
    # Mass split between hypotheses 2 and 3 -> window 1..4 holds all of it.
    prob = torch.zeros(1, 10, 1, 1)
    prob[0, 2], prob[0, 3] = 0.5, 0.5
    assert window_confidence(prob, torch.tensor([[[2.5]]])).item() == pytest.approx(1.0)
    # Near the ends the window is shifted inside.
    prob = torch.zeros(1, 10, 1, 1)
    prob[0, 9] = 1.0
    assert window_confidence(prob, torch.tensor([[[9.0]]])).item() == pytest.approx(1.0)
    # Fewer hypotheses than the window: confidence 1.
    assert window_confidence(
        torch.full((1, 3, 1, 1), 1 / 3), torch.ones(1, 1, 1)
    ).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------- loss & metrics


def fake_outputs(depth_full: torch.Tensor, strides=(4, 2, 1)) -> dict:
    height, width = depth_full.shape[-2:]
    stages = []
    for s in strides:
        h, w = math.ceil(height / s), math.ceil(width / s)
        stages.append({"depth": downsample_nearest(depth_full, s, h, w).clone(), "stride": s})
    return {"stages": stages, "depth": depth_full}


def test_loss_is_zero_for_perfect_depth_and_ignores_masked_pixels():
    config = ModelConfig()
    gt = torch.rand(2, 45, 61) * 400 + 500
    gt[0, :5] = 0  # unknown ground truth
    depth_min, depth_max = torch.tensor([400.0, 450.0]), torch.tensor([950.0, 1000.0])
    outputs = fake_outputs(gt.clamp_min(500))
    loss, terms = cascade_loss(outputs, gt, depth_min, depth_max, config)
    assert loss.item() == 0.0 and terms["loss"] == 0.0
    mask = torch.ones(2, 45, 61, dtype=torch.bool)
    mask[1, 20:] = False
    outputs = fake_outputs(torch.where(mask, gt.clamp_min(500), gt + 100))
    assert cascade_loss(outputs, gt, depth_min, depth_max, config, mask)[0].item() == 0.0
    assert cascade_loss(outputs, gt, depth_min, depth_max, config)[0].item() > 0.0


@pytest.mark.parametrize("inverse", [False, True])
def test_loss_and_relative_metrics_do_not_depend_on_units(inverse):
    config = ModelConfig(inverse_depth=inverse)
    generator = torch.Generator().manual_seed(0)
    gt_mm = torch.rand(1, 32, 40, generator=generator) * 400 + 500
    pred_mm = gt_mm + torch.randn(1, 32, 40, generator=generator) * 6
    range_mm = (torch.tensor([425.0]), torch.tensor([935.0]))
    loss_mm, _ = cascade_loss(fake_outputs(pred_mm), gt_mm, *range_mm, config)
    loss_m, _ = cascade_loss(
        fake_outputs(pred_mm / 1000), gt_mm / 1000, *(r / 1000 for r in range_mm), config
    )
    assert loss_mm.item() > 0
    assert loss_m.item() == pytest.approx(loss_mm.item(), rel=1e-4)
    metrics_mm = depth_metrics(pred_mm, gt_mm, *range_mm, config)
    metrics_m = depth_metrics(pred_mm / 1000, gt_mm / 1000, *(r / 1000 for r in range_mm), config)
    assert metrics_m["mae"] == pytest.approx(metrics_mm["mae"] / 1000, rel=1e-4)
    for key in ("mae_interval", "acc_1_interval", "acc_2_interval", "acc_4_interval"):
        assert metrics_m[key] == pytest.approx(metrics_mm[key], rel=1e-4, abs=1e-6)


def test_metrics_values():
    config = ModelConfig()
    gt = torch.full((1, 2, 4), 100.0)
    pred = gt + torch.tensor([[[0.5, 1.5, 3.0, 10.0], [0.0, 0.0, 0.0, 50.0]]])
    gt[0, 1, 3] = 0  # unknown: the 50 error is ignored
    m = depth_metrics(pred, gt, torch.tensor([0.0 + 1]), torch.tensor([1 + 192.0 * 4]), config)
    assert m["valid_pixels"] == 7
    assert m["mae"] == pytest.approx(15.0 / 7)
    assert m["acc_1"] == pytest.approx(4 / 7)
    assert m["acc_2"] == pytest.approx(5 / 7)
    assert m["acc_4"] == pytest.approx(6 / 7)
    assert m["mae_interval"] == pytest.approx(15.0 / 7 / 4)  # base interval = 768 / 192 = 4
    empty = depth_metrics(
        pred, torch.zeros_like(gt), torch.tensor([1.0]), torch.tensor([2.0]), config
    )
    assert empty["valid_pixels"] == 0 and math.isnan(empty["mae"])


# ---------------------------------------------------------------------------- whole network


@pytest.mark.parametrize(("height", "width", "views"), [(45, 61, 2), (75, 100, 4), (33, 40, 3)])
def test_network_output_shapes_and_ranges(height, width, views):
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    inputs = small_rig(2, views, height, width)
    with torch.inference_mode():
        out = model(*inputs)
    depth_min, depth_max = inputs[3], inputs[4]
    assert out["depth"].shape == (2, height, width)
    assert out["confidence"].shape == (2, height, width)
    for stage, stride, num in zip(out["stages"], (4, 2, 1), (16, 8, 4), strict=True):
        h, w = math.ceil(height / stride), math.ceil(width / stride)
        assert stage["stride"] == stride
        assert stage["depth"].shape == (2, h, w)
        assert stage["hypotheses"].shape == (2, num, h, w)
        assert stage["confidence"].shape == (2, h, w)
    for key in ("depth", "confidence"):
        assert torch.isfinite(out[key]).all()
    lo, hi = depth_min[:, None, None], depth_max[:, None, None]
    assert ((out["depth"] >= lo * (1 - 1e-6)) & (out["depth"] <= hi * (1 + 1e-6))).all()
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"inverse_depth": True, "visibility_weights": True}, {"aggregation": "variance"}],
)
def test_network_does_not_depend_on_units(overrides):
    """The same scene in mm and in metres gives the same depth / 1000 with the same weights."""
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config(**overrides)).eval()
    mm = small_rig(1, 3, 40, 56)
    images, K, E, dmin, dmax = mm
    E_m = E.clone()
    E_m[..., :3, 3] /= 1000
    with torch.inference_mode():
        out_mm = model(*mm)
        out_m = model(images, K, E_m, dmin / 1000, dmax / 1000)
    torch.testing.assert_close(out_m["depth"], out_mm["depth"] / 1000, rtol=1e-4, atol=0)
    torch.testing.assert_close(out_m["confidence"], out_mm["confidence"], rtol=0, atol=1e-4)


def test_initial_depth_runs_the_last_stage_exactly_as_the_cascade_does():
    """Seeding with the middle stage's depth, upsampled as the cascade upsamples it,
    reproduces the full run's final stage (size a multiple of 16: no padding in between)."""
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    inputs = small_rig(2, 3, 48, 64)
    with torch.inference_mode():
        full = model(*inputs)
        middle = full["stages"][1]["depth"]  # (B, 24, 32)
        seed = F.interpolate(middle[:, None], size=(48, 64), mode="bilinear", align_corners=False)[:, 0]
        seeded = model(*inputs, initial_depth=seed)
    assert len(seeded["stages"]) == 1 and seeded["stages"][0]["stride"] == 1
    torch.testing.assert_close(seeded["depth"], full["depth"])
    torch.testing.assert_close(seeded["confidence"], full["confidence"])


def test_initial_depth_centres_the_last_stage_on_it_at_any_size():
    torch.manual_seed(0)
    config = tiny_config()
    model = CascadeMVSNet(config).eval()
    images, K, E, dmin, dmax = small_rig(1, 3, 37, 53)
    seed = torch.full((1, 37, 53), 650.0)
    seed[:, :, 30:] = 700.0
    with torch.inference_mode():
        out = model(images, K, E, dmin, dmax, initial_depth=seed)
    hypotheses = out["stages"][0]["hypotheses"]  # (1, D, 37, 53)
    assert hypotheses.shape == (1, config.hypotheses[-1], 37, 53)
    # The window (D samples one final interval apart) is centred on the seed.
    torch.testing.assert_close(hypotheses.mean(dim=1), seed, rtol=1e-5, atol=1e-3)
    assert out["depth"].shape == (1, 37, 53)
    assert ((out["depth"] >= hypotheses[:, 0] - 1e-3) & (out["depth"] <= hypotheses[:, -1] + 1e-3)).all()
    with pytest.raises(ValueError, match="initial_depth"):
        model(images, K, E, dmin, dmax, initial_depth=seed[:, :-1])


def test_confident_guide_everywhere_equals_initial_depth():
    """A guide more confident than any stage can be is followed everywhere: the last stage
    is the one ``initial_depth`` runs, at odd sizes too."""
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    images, K, E, dmin, dmax = small_rig(2, 3, 37, 53)
    guide_depth = torch.linspace(500.0, 800.0, 53).expand(2, 37, 53).clone()
    with torch.inference_mode():
        guided = model(images, K, E, dmin, dmax, guide=(guide_depth, torch.ones(2, 37, 53)))
        seeded = model(images, K, E, dmin, dmax, initial_depth=guide_depth)
    assert len(guided["stages"]) == 3 and guided["guided"].shape == (2, 37, 53) and guided["guided"].all()
    torch.testing.assert_close(guided["depth"], seeded["depth"])
    torch.testing.assert_close(guided["confidence"], seeded["confidence"])


def test_guide_gives_way_where_the_previous_stage_is_confidently_nearer():
    """Where the guide says 'far' with no confidence, the middle stage's (nearer) depth
    seeds the last stage: the full cascade's result, pixel for pixel."""
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    inputs = small_rig(2, 3, 48, 64)
    far = inputs[4][:, None, None].expand(2, 48, 64).clone()  # depth_max everywhere
    with torch.inference_mode():
        full = model(*inputs)
        guided = model(*inputs, guide=(far, torch.zeros(2, 48, 64)))
    config = model.config
    window = config.hypotheses[-1] * (inputs[4] - inputs[3]) / (config.hypotheses[0] * config.interval_ratios[0])
    middle = F.interpolate(full["stages"][1]["depth"][:, None], size=(48, 64), mode="bilinear", align_corners=False)[:, 0]
    expected = middle < far - window[:, None, None]
    assert expected.float().mean() > 0.5  # the test says something
    assert torch.equal(~guided["guided"], expected)
    torch.testing.assert_close(guided["depth"][expected], full["depth"][expected])


@pytest.mark.parametrize("inverse", [False, True])
def test_guided_seed_rule_in_the_sampling_parameter(inverse):
    """Previous stage kept only where more confident and nearer by more than the last
    stage's window, measured in the sampling parameter (inverse depth too)."""
    model = CascadeMVSNet(tiny_config(inverse_depth=inverse))
    config = model.config
    dmin, dmax = torch.tensor([400.0]), torch.tensor([900.0])
    first = base_interval(dmin, dmax, config.hypotheses[0], config.interval_ratios[0], inverse)
    window = float(config.hypotheses[-1] * config.interval_ratios[-1] * first)

    def depth_nearer_by(windows: float) -> float:
        guide_param = float(to_param(torch.tensor(700.0), inverse))
        return float(from_param(torch.tensor(guide_param - windows * window), inverse))

    guide = (torch.full((1, 16, 16), 700.0), torch.full((1, 16, 16), 0.5))
    previous = torch.full((1, 16, 16), 700.0)
    confidence = torch.full((1, 16, 16), 0.9)
    previous[0, :8] = depth_nearer_by(1.2)  # rows 0-7: nearer by 1.2 windows
    previous[0, 8:] = depth_nearer_by(0.8)  # rows 8-15: nearer, but by less than a window
    confidence[0, :, 8:] = 0.1  # columns 8-15: less confident than the guide
    seed, from_guide = model._guided_seed(guide, previous, confidence, first, 16, 16)
    chosen = torch.zeros(16, 16, dtype=torch.bool)
    chosen[:8, :8] = True
    assert torch.equal(~from_guide[0], chosen)
    torch.testing.assert_close(seed[0][chosen], previous[0][chosen])
    assert (seed[0][~chosen] == 700.0).all()


def test_early_views_limit_the_stages_before_the_last():
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    images, K, E, dmin, dmax = small_rig(1, 4, 48, 64)
    with torch.inference_mode():
        all_views = model(images, K, E, dmin, dmax)
        same = model(images, K, E, dmin, dmax, early_views=4)
        early2 = model(images, K, E, dmin, dmax, early_views=2)
        two_views = model(images[:, :2], K[:, :2], E[:, :2], dmin, dmax)
    torch.testing.assert_close(same["depth"], all_views["depth"])
    for k in (0, 1):  # the coarse stages see the first two views only
        torch.testing.assert_close(early2["stages"][k]["depth"], two_views["stages"][k]["depth"])
    assert not torch.allclose(early2["depth"], two_views["depth"])  # the last one sees all four
    with pytest.raises(ValueError, match="early_views"):
        model(images, K, E, dmin, dmax, early_views=5)
    with pytest.raises(ValueError, match="guide must be"):
        model(images, K, E, dmin, dmax, guide=(torch.ones(1, 48, 64), torch.ones(1, 48, 63)))
    with pytest.raises(ValueError, match="not both"):
        model(images, K, E, dmin, dmax, initial_depth=torch.ones(1, 48, 64) * 600,
              guide=(torch.ones(1, 48, 64), torch.ones(1, 48, 64)))


def test_precomputed_pyramid_gives_the_same_output():
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    images, K, E, dmin, dmax = small_rig(2, 3, 45, 61)  # odd size: the pyramid is of padded images
    with torch.inference_mode():
        direct = model(images, K, E, dmin, dmax)
        # Features computed one image at a time, in another order, then put back in place.
        per_image = [model.image_features(image[None]) for image in images.reshape(6, 3, 45, 61).flip(0)]
        pyramid = [torch.cat([levels[k] for levels in per_image[::-1]]) for k in range(3)]
        given = model(images, K, E, dmin, dmax, pyramid=pyramid)
        assert [tuple(level.shape) for level in pyramid] == [(6, 16, 12, 16), (6, 8, 24, 32), (6, 8, 48, 64)]
        with pytest.raises(ValueError, match="pyramid must be"):
            model(images, K, E, dmin, dmax, pyramid=[level[:3] for level in pyramid])
    torch.testing.assert_close(given["depth"], direct["depth"])
    torch.testing.assert_close(given["confidence"], direct["confidence"])


def test_network_training_mode_and_gradients():
    torch.manual_seed(0)
    config = tiny_config(visibility_weights=True)
    model = CascadeMVSNet(config).train()
    inputs = small_rig(1, 3, 32, 48)
    out = model(*inputs)
    gt = torch.full((1, 32, 48), 650.0)
    loss, terms = cascade_loss(out, gt, inputs[3], inputs[4], config)
    loss.backward()
    assert set(terms) == {"stage0", "stage1", "stage2", "loss"}
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_network_rejects_bad_inputs():
    model = CascadeMVSNet(tiny_config())
    images, K, E, dmin, dmax = small_rig(1, 3, 32, 32)
    with pytest.raises(ValueError, match="source"):
        model(images[:, :1], K[:, :1], E[:, :1], dmin, dmax)
    with pytest.raises(ValueError, match="intrinsics"):
        model(images, K[:, :2], E, dmin, dmax)
    with pytest.raises(ValueError, match="depth ranges"):
        model(images, K, E, dmax, dmin)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_network_runs_under_cpu_autocast():
    """The float16/bfloat16 handling (warping and softmax in float32) under CPU autocast.

    oneDNN is switched off: its bfloat16 3D convolutions on this AMX CPU intermittently
    return NaN for 4-channel channels-last volumes (apparently uninitialised padding; never
    seen in float32, and CPU training does not use autocast), which would make this
    stand-in for the CUDA float16 path flaky.
    """
    torch.manual_seed(0)
    model = CascadeMVSNet(tiny_config()).eval()
    inputs = small_rig(1, 3, 32, 48)
    with (
        torch.backends.mkldnn.flags(enabled=False),
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        out = model(*inputs)
    assert out["depth"].dtype == torch.float32
    assert torch.isfinite(out["depth"]).all()
    assert ((out["depth"] >= inputs[3]) & (out["depth"] <= inputs[4])).all()


def test_checkpoint_round_trip_is_small(tmp_path):
    config = ModelConfig()
    model = CascadeMVSNet(config)
    path = tmp_path / "model.pt"
    torch.save({"config": dataclasses.asdict(config), "state_dict": model.state_dict()}, path)
    assert path.stat().st_size < 20 * 2**20
    saved = torch.load(path, weights_only=True)
    clone = CascadeMVSNet(ModelConfig(**saved["config"]))
    clone.load_state_dict(saved["state_dict"])
    inputs = small_rig(1, 2, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(clone.eval()(*inputs)["depth"], model.eval()(*inputs)["depth"])


def test_overfits_a_synthetic_plane():
    """A few dozen Adam steps on one rendered scene: the loss collapses and the final depth
    error ends far below the first stage's hypothesis spacing."""
    torch.manual_seed(0)
    images, K, E, gt, depth_min, depth_max = render_plane_scene()
    config = ModelConfig()
    model = CascadeMVSNet(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(images, K, E, depth_min, depth_max)
        loss, _ = cascade_loss(out, gt, depth_min, depth_max, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        out = model(images, K, E, depth_min, depth_max)
    metrics = depth_metrics(out["depth"], gt, depth_min, depth_max, config)
    first_spacing = float((depth_max - depth_min) / (config.hypotheses[0] - 1))
    assert losses[-1] < 0.1 * losses[0]
    assert metrics["mae"] < 0.3 * first_spacing
