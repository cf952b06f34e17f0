"""The network, training and reconstruction on a CUDA GPU, in float32 and float16 autocast.

Every test here needs a GPU and is skipped without one; the CPU side of the precision
switch (``mixed_precision`` is ignored there) is tested in ``tests/test_inference.py``.

Inference tests use the shipped checkpoint rather than random weights: a random network's
cost volumes are nearly flat (confidence about 0.5 everywhere, depth hardly moved by its
inputs), so a wrong kernel or precision would barely show in its depth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mvs.checkpoint import load_model
from mvs.data.scene import load_scene
from mvs.data.synthetic import SynthConfig, generate_scene
from mvs.demo import HELD_OUT_SEED
from mvs.inference import ReconstructConfig, read_depth_maps, reconstruct_scene
from mvs.models import ModelConfig, base_interval
from mvs.training import (
    build_datasets,
    build_model,
    build_optimizer,
    resolve_device,
    train_one_epoch,
)
from tests.conftest import make_plane_scene
from tests.test_models import small_rig
from tests.test_shipped_checkpoint import assert_trained_accuracy
from tests.test_training import small_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def last_spacing(config: ModelConfig, depth_min: float, depth_max: float) -> float:
    """Hypothesis spacing of the network's last stage for this depth range, scene units."""
    interval = base_interval(torch.tensor([depth_min]), torch.tensor([depth_max]), config.hypotheses[0],
                             config.interval_ratios[0], config.inverse_depth)
    return float(interval[0]) * config.interval_ratios[-1]


@pytest.fixture
def no_tf32():
    """Plain float32 matmuls and convolutions: TF32 (10-bit mantissa) would put the GPU's
    float32 results about as far from the CPU's as float16 does."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module")
def rig():
    """Random images, 3 views at 96x64, and the forward-looking rig of test_models (400-900)."""
    return small_rig(1, 3, 64, 96)


@pytest.fixture(scope="module")
def held_out_scene(tmp_path_factory):
    """The held-out scene of test_shipped_checkpoint, whose CPU accuracy is measured there."""
    root = tmp_path_factory.mktemp("held_out") / "scene"
    generate_scene(root, SynthConfig(views=6, width=320, height=256, lights=1, test_light=0, gt_spacing=1.0),
                   HELD_OUT_SEED + 7)
    return root


def test_float32_forward_on_cuda_matches_the_cpu(rig, no_tf32):
    cpu_model, _ = load_model()
    cuda_model, _ = load_model(device="cuda")
    with torch.inference_mode():
        cpu = cpu_model(*rig)
        cuda = cuda_model(*(t.cuda() for t in rig))
    spacing = last_spacing(cpu_model.config, float(rig[3][0]), float(rig[4][0]))
    # Only summation order differs; a 1e-5 relative perturbation of the images moves the
    # depth by at most 0.003 spacings on the CPU.
    error = (cuda["depth"].cpu() - cpu["depth"]).abs() / spacing
    assert float(error.median()) < 0.01, float(error.median())
    assert float(error.quantile(0.99)) < 0.05, float(error.quantile(0.99))
    assert float((cuda["confidence"].cpu() - cpu["confidence"]).abs().max()) < 0.01


def test_float16_autocast_forward_is_in_range_and_agrees_with_float32(rig, no_tf32):
    model, _ = load_model(device="cuda")
    images, K, E, depth_min, depth_max = (t.cuda() for t in rig)
    with torch.inference_mode():
        reference = model(images, K, E, depth_min, depth_max)
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(images, K, E, depth_min, depth_max)
    depth, confidence = out["depth"], out["confidence"]
    assert depth.dtype == confidence.dtype == torch.float32  # the depth head runs in float32
    assert torch.isfinite(depth).all() and torch.isfinite(confidence).all()
    assert ((depth >= depth_min * (1 - 1e-6)) & (depth <= depth_max * (1 + 1e-6))).all()
    assert ((confidence >= 0) & (confidence <= 1)).all()
    # CPU float16 autocast, a stand-in: every pixel within one spacing, median 0.03
    # spacings (bfloat16, with 3 fewer mantissa bits: 94-100% within one spacing).
    error = (depth - reference["depth"]).abs() / last_spacing(model.config, float(rig[3][0]), float(rig[4][0]))
    assert float((error < 1).float().mean()) >= 0.9
    assert float(error.median()) < 0.25


def test_one_mixed_precision_training_step(tmp_path):
    """train_one_epoch's AMP path with a GradScaler for one batch: finite loss, finite
    weights, and an optimiser step that was taken (not skipped for inf/NaN gradients)."""
    data = tmp_path / "planes"
    for k in range(3):
        make_plane_scene(data / f"scene_{k:03d}", views=3, width=48, height=32, seed=k)
    config = small_config(data, tmp_path / "run")
    config.device = "cuda"
    config.optim.steps_per_epoch = 1
    assert config.optim.amp
    device = resolve_device(config.device)
    train_set, _ = build_datasets(config)
    loader = DataLoader(train_set, batch_size=config.optim.batch_size, shuffle=False, drop_last=True)
    model = build_model(config).to(device)
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch=1)
    # Not the default 2**16: a fresh network's first gradients can overflow float16 at that
    # scale (on CPU the largest weight gradient of this batch is 0.9, 61,000 once scaled,
    # against float16's 65,504), and GradScaler then rightly skips the step, leaving
    # nothing to check. At 2**10 an unchanged scale after the step means it was taken.
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    metrics = train_one_epoch(model, loader, optimizer, scheduler, config, device, scaler)

    assert metrics["steps"] == 1
    # train_one_epoch averages finite values only: a NaN loss leaves no train_loss at all.
    assert np.isfinite(metrics.get("train_loss", np.nan)), metrics
    assert scaler.get_scale() == 2.0**10, "GradScaler skipped the step: inf or NaN gradients"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    changed = [not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters()]
    assert sum(changed) >= 0.9 * len(changed), f"{sum(changed)} of {len(changed)} parameters changed"


def test_reconstruct_on_cuda_in_float16_and_float32(held_out_scene, tmp_path):
    scene = load_scene(held_out_scene)
    model, _ = load_model(device="cuda")
    depths = {}
    for mixed_precision in (True, False):
        out = tmp_path / f"mixed_{mixed_precision}"
        config = ReconstructConfig(device="cuda", mixed_precision=mixed_precision, previews=False, fuse=False)
        summary = reconstruct_scene(scene, model, out, config, progress=False)
        assert summary["config"]["mixed_precision"] is mixed_precision
        depths[mixed_precision], confidences = read_depth_maps(out, scene)
        for view, depth in depths[mixed_precision].items():
            camera = scene.views[view].camera
            assert np.isfinite(depth).all() and np.isfinite(confidences[view]).all()
            assert (depth >= camera.depth_min * (1 - 1e-6)).all() and (depth <= camera.depth_max * (1 + 1e-6)).all()
        # The bounds the CPU run of the same scene meets (test_shipped_checkpoint).
        assert_trained_accuracy(out, held_out_scene)
    # CPU float16 autocast, a stand-in: 98.8-99.99% of each view's pixels within one
    # last-stage spacing of float32 (bfloat16: 73-89%).
    errors = np.concatenate([
        np.abs(depths[True][view] - depths[False][view]).ravel()
        / last_spacing(model.config, scene.views[view].camera.depth_min, scene.views[view].camera.depth_max)
        for view in depths[False]
    ])
    assert float(np.mean(errors < 1)) >= 0.9
    assert float(np.median(errors)) < 0.25
