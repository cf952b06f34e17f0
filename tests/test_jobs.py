"""The Ray jobs on a private local Ray head (2 CPUs): ``ray job submit`` of the training
job end to end, DDP correctness, tuning and batch reconstruction.

One head serves the whole module (start-up costs ~5 s, a 2-worker fit ~20-30 s here).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mvs.checkpoint import load_model, read_checkpoint
from mvs.models import ModelConfig
from mvs.training import DataConfig, OptimConfig, TrainConfig
from tests.conftest import make_plane_scene
from tests.ray_cluster import AUTH_ENV, LocalRayHead

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = ModelConfig(hypotheses=(8, 4, 2), feature_channels=(8, 8, 4), groups=(4, 4, 2),
                          regularization_channels=(4, 4, 4))
SMALL_OVERRIDES = ["model.hypotheses=[8,4,2]", "model.feature_channels=[8,8,4]", "model.groups=[4,4,2]",
                   "model.regularization_channels=[4,4,4]"]


@pytest.fixture(scope="module")
def plane_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planes")
    for k in range(4):
        make_plane_scene(root / f"scene_{k:03d}", views=3, width=48, height=32, seed=k)
    return root


@pytest.fixture(scope="module")
def ray_head():
    saved = {k: os.environ.get(k) for k in AUTH_ENV}
    os.environ.update(AUTH_ENV)
    head = LocalRayHead(num_cpus=2).start()
    try:
        yield head
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_driver(ray_head):
    """This test process as a driver of the module's head."""
    import ray

    from jobs.common import worker_runtime_env

    ray.init(address=ray_head.address, runtime_env=worker_runtime_env(), log_to_driver=False)
    yield ray
    ray.shutdown()


def wait_for_job(client, job_id: str, timeout: float = 300.0):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1.0)
    client.stop_job(job_id)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s:\n{client.get_job_logs(job_id)[-4000:]}")


def test_ray_job_submit_trains_and_the_checkpoint_reconstructs(ray_head, plane_data, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from mvs.cli import main as mvs_main

    storage = tmp_path / "runs"
    client = JobSubmissionClient(ray_head.dashboard_url)
    entrypoint = " ".join([
        "python", "jobs/train.py", "--num-workers", "2", "--name", "submitted", "--storage-path", str(storage),
        f"data.train={plane_data}", "data.num_views=3", "data.crop=null", "data.validation_fraction=0.25",
        "optim.epochs=2", "optim.batch_size=1", "optim.steps_per_epoch=2", "optim.warmup_steps=1",
        "optim.validation_samples=2", *SMALL_OVERRIDES,
    ])
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO_ROOT)})
    status = wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "reconstruct with:" in logs

    run = storage / "submitted"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == [0, 1] and summary["restarts"] == []
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    for m in metrics:
        for key in ("train_loss", "val_acc_2", "train_acc_2", "samples_per_second", "lr"):
            assert np.isfinite(m[key]), key
        assert m["world_size"] == 2 and m["ddp_param_spread"] == 0.0
    assert (run / "config.yaml").is_file() and (run / "ray.yaml").is_file()

    # Each Ray checkpoint is a folder with model.pt, loadable by `mvs reconstruct --checkpoint`.
    latest = Path(summary["latest_checkpoint"])
    payload = read_checkpoint(latest)
    assert payload["training_state"]["epoch"] == 1 and "optimizer" in payload["training_state"]
    model, _ = load_model(latest)
    assert model.config == SMALL_MODEL
    out = tmp_path / "recon"
    assert mvs_main(["reconstruct", str(plane_data / "scene_000"), "--out", str(out), "--checkpoint",
                     str(latest), "--num-views", "3", "--no-previews"]) == 0
    assert len(list((out / "depths").glob("*.pfm"))) == 3


def _ddp_job(plane_data: Path, storage: Path, name: str, workers: int, batch: int):
    from jobs.train import DistributedConfig, TrainJobConfig

    train = TrainConfig(
        data=DataConfig(train=str(plane_data), num_views=3, crop=None, validation_fraction=0.0,
                        augment=False, shuffle=False),
        model=SMALL_MODEL,
        # SGD: Adam's first steps are ~lr * sign(gradient), so parameters whose gradient is
        # mathematically zero (a bias before the depth softmax) would move by +-lr on
        # float round-off alone and hide the comparison.
        optim=OptimConfig(epochs=1, batch_size=batch, warmup_steps=1, steps_per_epoch=3, freeze_batchnorm=True,
                          optimizer="sgd", lr=0.05),
    )
    return TrainJobConfig(train=train, ray=DistributedConfig(num_workers=workers, storage_path=str(storage), name=name))


def test_ddp_two_workers_match_one_worker_with_the_combined_batch(ray_driver, plane_data, tmp_path):
    """2 workers x batch 1 and 1 worker x batch 2 see the same samples per step, so with
    DDP's gradient averaging they must reach the same weights (BatchNorm frozen: CPU has no
    SyncBatchNorm; SGD, see _ddp_job). The ranks' parameters must also be identical."""
    from jobs.train import run

    two = run(_ddp_job(plane_data, tmp_path, "two_workers", workers=2, batch=1))
    one = run(_ddp_job(plane_data, tmp_path, "one_worker", workers=1, batch=2))
    assert two["final_metrics"]["world_size"] == 2 and two["final_metrics"]["steps"] == 3
    assert two["final_metrics"]["ddp_param_spread"] == 0.0
    weights_two = read_checkpoint(two["latest_checkpoint"])["state_dict"]
    weights_one = read_checkpoint(one["latest_checkpoint"])["state_dict"]
    initial = load_model_weights(SMALL_MODEL)
    difference, moved = 0.0, 0.0
    for name, value in weights_one.items():
        if value.is_floating_point():
            difference = max(difference, float((weights_two[name] - value).abs().max()))
            moved = max(moved, float((value - initial[name]).abs().max()))
    print(f"largest weight difference {difference:.3g}, largest training update {moved:.3g}")
    assert moved > 1e-3  # the comparison is not between two untrained models
    assert difference < 1e-4 * moved


def load_model_weights(config: ModelConfig) -> dict:
    from mvs.models import CascadeMVSNet

    torch.manual_seed(0)  # build_model seeds with TrainConfig.seed = 0
    return CascadeMVSNet(config).state_dict()
