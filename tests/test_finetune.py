"""Self-supervised losses and fine-tuning (mvs.models.self_supervised_loss, mvs.finetune)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mvs.cameras import Camera, look_at, stack_cameras
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model, read_checkpoint
from mvs.cli import main as mvs_main
from mvs.config import load_config
from mvs.demo import HELD_OUT_SEED
from mvs.finetune import FinetuneConfig, sidecar_paths
from mvs.inference import ReconstructConfig
from mvs.io import read_pfm
from mvs.models import ModelConfig
from mvs.models.self_supervised_loss import (
    SelfSupervisedConfig,
    edge_aware_smoothness,
    min_photometric_loss,
    prior_loss,
    self_supervised_loss,
    warp_images_with_depth,
)
from tests.conftest import plane_depth

WIDTH, HEIGHT = 96, 72


def plane_texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(…, 3) smooth colour pattern on the plane z = 0 (x, y in mm), values in [0.1, 0.9].

    Wavelengths of 40-90 mm span several pixels at 600 mm with these cameras (~4.5 mm per
    pixel), so bilinear resampling reproduces it almost exactly.
    """
    channels = [
        0.5 + 0.2 * np.sin(2 * np.pi * x / 53.0 + 0.3) + 0.2 * np.cos(2 * np.pi * y / 71.0),
        0.5 + 0.2 * np.sin(2 * np.pi * (x + y) / 61.0) + 0.2 * np.cos(2 * np.pi * (x - 2 * y) / 89.0),
        0.5 + 0.2 * np.cos(2 * np.pi * x / 43.0 - 1.0) * np.sin(2 * np.pi * y / 47.0 + 0.5) + 0.1 * np.sin(x / 20.0),
    ]
    return np.stack(channels, -1)


def plane_views(views: int = 5, scale: float = 1.0) -> tuple[list[Camera], list[np.ndarray], list[np.ndarray]]:
    """Cameras ~600 mm above a textured plane z = 0, their exact images and depths.

    ``scale`` expresses the same scene in other units (1e-3: metres): translations and
    depth ranges scale, images do not.
    """
    cameras, images, depths = [], [], []
    focal = 2890.0 * WIDTH / 1600
    K = np.array([[focal, 0.0, WIDTH / 2 - 0.3], [0.0, focal, HEIGHT / 2 + 0.2], [0.0, 0.0, 1.0]])
    for v in range(views):
        angle = 2 * np.pi * v / max(1, views - 1)
        radius = 0.0 if v == 0 else 70.0
        center = np.array([radius * np.cos(angle), radius * np.sin(angle), 600.0])
        E = look_at(center, np.zeros(3), up=np.array([0.0, 1.0, 0.0]))
        camera = Camera(K, E, WIDTH, HEIGHT, 450.0, 750.0, 192)
        depth = plane_depth(camera, np.array([0.0, 0.0, 1.0]), 0.0)  # (H, W), mm
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
        world = (rays * depth[..., None] - E[:3, 3]) @ E[:3, :3]  # R^T (x_cam - t)
        images.append(plane_texture(world[..., 0], world[..., 1]).astype(np.float32))
        E_scaled = E.copy()
        E_scaled[:3, 3] *= scale
        cameras.append(Camera(K, E_scaled, WIDTH, HEIGHT, 450.0 * scale, 750.0 * scale, 192))
        depths.append(depth * scale)
    return cameras, images, depths


def plane_tensors(scale: float = 1.0) -> dict[str, torch.Tensor]:
    cameras, images, depths = plane_views(scale=scale)
    K, E = stack_cameras(cameras)
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (V, 3, H, W)
    return {
        "reference": image[None, 0], "sources": image[None, 1:],
        "K": K[None, 0], "E": E[None, 0], "src_K": K[None, 1:], "src_E": E[None, 1:],
        "depth": torch.from_numpy(depths[0])[None],  # (1, H, W)
        "depth_min": torch.tensor([cameras[0].depth_min]), "depth_max": torch.tensor([cameras[0].depth_max]),
    }


def photometric(t: dict, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    warped, valid = warp_images_with_depth(t["sources"], t["K"], t["E"], t["src_K"], t["src_E"], depth)
    return min_photometric_loss(t["reference"], warped, valid)


def test_photometric_loss_is_near_zero_at_the_true_depth_and_grows_away_from_it():
    t = plane_tensors()
    exact, _, covered = photometric(t, t["depth"])
    assert covered.float().mean() > 0.8  # the sources see most of the reference
    assert float(exact) < 0.01
    errors = [float(photometric(t, t["depth"] * factor)[0]) for factor in (1.01, 1.03, 1.1)]
    assert errors[0] > 3 * float(exact)
    assert errors[0] < errors[1] < errors[2]  # a farther-off depth looks worse


def test_photometric_minimum_over_sources_ignores_a_source_that_does_not_see_the_pixel():
    t = plane_tensors()
    clean, _, _ = photometric(t, t["depth"])
    occluded = dict(t)
    sources = t["sources"].clone()
    sources[:, 0] = torch.rand_like(sources[:, 0])  # one source sees something else entirely
    occluded["sources"] = sources
    with_min, _, _ = photometric(occluded, t["depth"])
    assert float(with_min) < 0.02 and float(with_min) < 2 * float(clean) + 0.005
    # ... while that source alone is far off: the minimum, not the mean, is what saves it.
    only_bad = dict(occluded, sources=sources[:, :1], src_K=t["src_K"][:, :1], src_E=t["src_E"][:, :1])
    assert float(photometric(only_bad, t["depth"])[0]) > 0.1


def test_pixels_projecting_outside_every_source_are_left_out():
    t = plane_tensors()
    depth = t["depth"].clone()
    # Left half: 1 mm in front of the reference camera, i.e. next to its centre, which the
    # sources (70 mm to the side) see far outside their images.
    depth[:, :, : WIDTH // 2] = 1.0
    warped, valid = warp_images_with_depth(t["sources"], t["K"], t["E"], t["src_K"], t["src_E"], depth)
    assert valid.shape == (1, 4, HEIGHT, WIDTH) and warped.shape == (1, 4, 3, HEIGHT, WIDTH)
    loss, per_pixel, covered = min_photometric_loss(t["reference"], warped, valid)
    assert not covered[:, :, : WIDTH // 2].any()
    assert (per_pixel[:, :, : WIDTH // 2] == 0).all()
    assert covered[:, :, WIDTH // 2 :].float().mean() > 0.8
    assert float(loss) < 0.01  # the mean runs over covered (correct) pixels only


def test_gradients_reach_the_depth():
    t = plane_tensors()
    depth = (t["depth"] * 1.02).requires_grad_(True)
    loss, _, _ = photometric(t, depth)
    loss.backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0
    # Moving against the gradient lowers the loss (the gradient points the right way).
    with torch.no_grad():
        step = depth - 2.0 * depth.grad / depth.grad.abs().max()  # at most 2 mm
    assert float(photometric(t, step)[0]) < float(loss.detach())


def fake_outputs(depth: torch.Tensor, rng: np.random.Generator, noise: float) -> dict:
    """A cascade-like output dict: per-stage depth (exact x (1 + noise)) and confidence."""
    stages = []
    for stride in (4, 2, 1):
        d = depth[:, stride // 2 :: stride, stride // 2 :: stride]
        factor = torch.from_numpy(1.0 + noise * rng.standard_normal(d.shape).astype(np.float32))
        confidence = torch.from_numpy(rng.uniform(0.0, 1.0, d.shape).astype(np.float32))
        stages.append({"depth": d * factor, "confidence": confidence, "stride": stride})
    return {"stages": stages, "depth": stages[-1]["depth"], "confidence": stages[-1]["confidence"]}


def full_loss(t: dict, outputs: dict, prior: dict) -> tuple[torch.Tensor, dict]:
    return self_supervised_loss(
        outputs, prior, t["reference"], t["K"], t["E"], t["sources"], t["src_K"], t["src_E"],
        t["depth_min"], t["depth_max"], ModelConfig(), SelfSupervisedConfig(prior_weight=0.5),
    )


def test_every_term_is_the_same_in_millimetres_and_metres():
    terms = {}
    for scale in (1.0, 1e-3):
        t = plane_tensors(scale)
        outputs = fake_outputs(t["depth"], np.random.default_rng(0), 0.01)
        prior = fake_outputs(t["depth"], np.random.default_rng(1), 0.01)
        _, terms[scale] = full_loss(t, outputs, prior)
    for key in ("photometric", "smoothness", "prior", "loss"):
        assert terms[1.0][key] > 0
        assert terms[1e-3][key] == pytest.approx(terms[1.0][key], rel=2e-3), key


def test_prior_and_smoothness_terms():
    depth = torch.full((1, 8, 8), 600.0)
    interval = torch.tensor([2.5])
    confidence = torch.full((1, 8, 8), 0.9)
    assert float(prior_loss(depth, depth, confidence, interval)) == 0.0
    shifted = depth + 3 * 2.5  # three intervals off: smooth-L1 (beta 1) gives 2.5
    assert float(prior_loss(shifted, depth, confidence, interval)) == pytest.approx(0.9 * 2.5)
    assert float(prior_loss(shifted, depth, torch.full_like(confidence, 0.3), interval)) == 0.0  # not confident
    image = torch.rand(1, 3, 8, 8)
    assert float(edge_aware_smoothness(depth, image)) == pytest.approx(0.0, abs=1e-7)
    bumpy = depth.clone()
    bumpy[:, ::2] += 30.0
    assert float(edge_aware_smoothness(bumpy, image)) > 0.01
    # Unit-free: the same bumps in metres cost the same.
    assert float(edge_aware_smoothness(bumpy * 1e-3, image)) == pytest.approx(float(edge_aware_smoothness(bumpy, image)), rel=1e-4)


def test_image_terms_can_weight_the_stages_on_their_own():
    t = plane_tensors()
    outputs = fake_outputs(t["depth"], np.random.default_rng(0), 0.02)
    args = (outputs, None, t["reference"], t["K"], t["E"], t["sources"], t["src_K"], t["src_E"],
            t["depth_min"], t["depth_max"], ModelConfig())
    final_only = SelfSupervisedConfig(prior_weight=0.0, image_stage_weights=[0, 0, 2])  # YAML gives lists
    loss, terms = self_supervised_loss(*args, final_only)
    assert final_only.image_stage_weights == (0.0, 0.0, 2.0)
    assert terms["photometric"] == pytest.approx(terms["photometric_final"])
    assert float(loss) == pytest.approx(terms["photometric"] + final_only.smoothness_weight * terms["smoothness"], rel=1e-5)
    _, default_terms = self_supervised_loss(*args, SelfSupervisedConfig(prior_weight=0.0))
    assert default_terms["photometric"] != pytest.approx(terms["photometric"])  # coarse stages count by default
    for bad in ([1.0, -1.0, 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="image_stage_weights"):
            SelfSupervisedConfig(image_stage_weights=bad)


def test_loss_gradients_reach_every_stage_of_the_network():
    from mvs.models import CascadeMVSNet

    t = plane_tensors()
    config = ModelConfig(hypotheses=(8, 4, 2), feature_channels=(8, 8, 4), groups=(4, 4, 2),
                         regularization_channels=(4, 4, 4))
    torch.manual_seed(0)
    model = CascadeMVSNet(config).eval()  # BatchNorm folded: gradients must still flow
    images = torch.cat([t["reference"][:, None], t["sources"][:, :2]], 1)  # (1, 3, 3, H, W)
    K = torch.cat([t["K"][:, None], t["src_K"][:, :2]], 1)
    E = torch.cat([t["E"][:, None], t["src_E"][:, :2]], 1)
    outputs = model(images, K, E, t["depth_min"], t["depth_max"])
    loss, terms = self_supervised_loss(outputs, None, t["reference"], t["K"], t["E"], t["sources"], t["src_K"],
                                       t["src_E"], t["depth_min"], t["depth_max"], config)
    loss.backward()
    assert np.isfinite(terms["loss"]) and terms["prior"] == 0.0
    for k in range(3):  # the coarse stages' regularisers learn from their own stage's term
        grads = [p.grad for p in model.regularizers[k].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    assert model.features.enc0.conv.weight.grad.abs().sum() > 0
    assert model.features.enc0.bn.weight.grad is not None  # folded BatchNorm's affine learns


# ----------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    """A 5-view held-out synthetic scene at 96x80 (about a second to render)."""
    from mvs.data.synthetic import SynthConfig, generate_scene

    root = tmp_path_factory.mktemp("finetune") / "scene"
    generate_scene(root, SynthConfig(views=5, width=96, height=80, gt_spacing=2.0, num_sources=4), HELD_OUT_SEED + 7)
    return root


@pytest.fixture(scope="module")
def finetuned(tiny_scene, tmp_path_factory):
    """`mvs finetune` run on the tiny scene; returns (checkpoint path, printed output)."""
    out = tmp_path_factory.mktemp("run") / "tiny.pt"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = mvs_main(["finetune", str(tiny_scene), "--out", str(out), "--steps", "5", "--lr", "3e-4",
                         "--no-crop", "--max-dim", "96", "--num-views", "3", "--device", "cpu",
                         "--set", "eval_views=3", "source_pool=2"])
    assert code == 0
    return out, buffer.getvalue()


def test_finetune_writes_a_loadable_checkpoint_that_records_its_scene(finetuned, tiny_scene):
    out, printed = finetuned
    assert "checkpoint" in printed and str(out) in printed
    model, payload = load_model(out)
    meta = payload["meta"]
    assert meta["finetuned_on"]["scene"] == str(tiny_scene.resolve())
    assert meta["finetuned_on"]["steps"] == 5 and meta["finetuned_on"]["processed_size"] == [96, 80]
    assert meta["finetuned_from"] == str(DEFAULT_CHECKPOINT.resolve())
    config_path, log_path = sidecar_paths(out)
    config = load_config(FinetuneConfig, config_path)
    assert config.steps == 5 and config.crop is None and config.num_views == 3 and config.lr == 3e-4
    log = json.loads(log_path.read_text())
    assert [e["step"] for e in log["log"]] == list(range(5))
    assert all(np.isfinite(e["loss"]) and e["loss"] > 0 for e in log["log"])
    # The weights moved; BatchNorm's running statistics (eval mode throughout) did not.
    base, _ = load_model(DEFAULT_CHECKPOINT)
    tuned, shipped = model.state_dict(), base.state_dict()
    assert not torch.equal(tuned["features.enc0.conv.weight"], shipped["features.enc0.conv.weight"])
    for name in tuned:
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(tuned[name], shipped[name], msg=name)


def test_finetune_lowers_the_photometric_loss(finetuned):
    out, _ = finetuned
    loss = read_checkpoint(out)["meta"]["self_supervised_loss"]
    before, after = loss["before"], loss["after"]
    assert before["prior"] == 0.0  # the starting network *is* the prior
    assert after["photometric"] < before["photometric"]
    assert after["prior"] > 0.0


def test_reconstruct_runs_with_the_finetuned_checkpoint(finetuned, tiny_scene, tmp_path):
    out, _ = finetuned
    recon = tmp_path / "recon"
    assert mvs_main(["reconstruct", str(tiny_scene), "--out", str(recon), "--checkpoint", str(out),
                     "--num-views", "3", "--no-fuse", "--no-previews"]) == 0
    depth = read_pfm(recon / "depths" / "00000000.pfm")
    assert depth.shape == (80, 96) and np.isfinite(depth).all() and (depth > 0).all()


def test_finetune_command_rejects_bad_requests(tiny_scene, tmp_path, capsys):
    assert mvs_main(["finetune", str(tmp_path / "missing"), "--out", str(tmp_path / "x.pt"), "--steps", "1"]) == 2
    assert "scene folder not found" in capsys.readouterr().err
    assert mvs_main(["finetune", str(tiny_scene), "--out", str(tmp_path / "x.pt"), "--num-views", "1"]) == 2
    assert "num_views" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_finetune_feeds_the_network_as_many_views_as_reconstruction_does():
    # Fine-tuned with fewer sources than it is later run with, the network lost
    # silhouette consistency on DTU scan 24 (benchmarks/finetune_effect.py).
    config = FinetuneConfig()
    assert config.num_views == ReconstructConfig().num_views
    assert config.source_pool == config.num_views - 1  # always the best sources, as reconstruction
