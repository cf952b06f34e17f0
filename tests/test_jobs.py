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
from mvs.config import load_config
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
    head = LocalRayHead(num_cpus=2)
    client_env = {**AUTH_ENV, "RAY_ADDRESS": head.address}
    saved = {k: os.environ.get(k) for k in client_env}
    os.environ.update(client_env)
    head.start()
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


def test_tune_search_writes_trials_and_a_best_config_and_resumes(ray_driver, plane_data, tmp_path):
    from jobs.train import DistributedConfig, TrainJobConfig
    from jobs.tune import run as tune_run

    space = {"optim.lr": {"loguniform": [1e-4, 3e-3]}, "model.groups": {"choice": [[4, 4, 2], [2, 2, 2]]},
             "model.hypotheses": {"choice": [[8, 4, 2], [6, 4, 2]]}}
    train = TrainConfig(data=DataConfig(train=str(plane_data), num_views=3, crop=None, validation_fraction=0.25),
                        model=SMALL_MODEL,
                        optim=OptimConfig(epochs=2, batch_size=1, warmup_steps=1, steps_per_epoch=2, validation_samples=2))
    settings = DistributedConfig(num_workers=2, cpus_per_worker=0.5, storage_path=str(tmp_path), name="search",
                                 max_failures=0, keep_checkpoints=1)
    summary = tune_run(TrainJobConfig(train=train, ray=settings), space, samples=2, max_concurrent=1, trial_cpus=0.5)
    experiment = tmp_path / "search"
    rows = (experiment / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and "val_acc_2" in rows[0] and "optim.lr" in rows[0]
    assert summary["trials"] == 2 and 0.0 <= summary["best_value"] <= 1.0
    best = load_config(TrainConfig, experiment / "best_config.yaml")
    assert best.optim.lr == pytest.approx(summary["best_sampled"]["optim.lr"])
    assert list(best.model.groups) == summary["best_sampled"]["model.groups"]
    assert 1e-4 <= best.optim.lr <= 3e-3
    # Each trial was a 2-worker training run with its own checkpoints.
    assert len(list((experiment / "trials").glob("search_*/checkpoint_*"))) >= 2

    # Resuming a finished search trains nothing more and reports the same trials.
    again = tune_run(TrainJobConfig(train=train, ray=settings), space, samples=2, max_concurrent=1, trial_cpus=0.5,
                     resume=True)
    assert again["best_sampled"] == summary["best_sampled"] and again["trials"] == 2


def test_tune_rejects_an_unknown_search_key(plane_data, tmp_path):
    from jobs.train import TrainJobConfig
    from jobs.tune import main as tune_main

    (tmp_path / "space.yaml").write_text("optim.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n")
    assert tune_main(["--space", str(tmp_path / "space.yaml"), f"data.train={plane_data}"]) == 2
    assert TrainJobConfig  # the module imports without a cluster


def test_batch_reconstruction_reports_a_bad_scene_and_finishes_the_others(ray_driver, plane_data, tmp_path):
    import shutil

    from jobs.reconstruct import BatchConfig, find_scenes
    from jobs.reconstruct import run as batch_run
    from mvs.io import read_point_cloud

    scenes = tmp_path / "scenes"
    for name in ("scene_000", "scene_001"):
        shutil.copytree(plane_data / name, scenes / name)
    shutil.copytree(plane_data / "scene_002", scenes / "broken")
    (scenes / "broken" / "cams" / "00000001_cam.txt").write_text("extrinsic\n1 0 0\n")
    summary = batch_run(find_scenes([str(scenes)]), tmp_path / "out", BatchConfig(num_views=3, previews=False),
                        actors=2, cpus_per_actor=0.5, use_gpu=False, progress=False)
    assert (summary["scenes"], summary["succeeded"], summary["failed"]) == (3, 2, 1)
    by_name = {Path(r["scene"]).name: r for r in summary["results"]}
    assert by_name["broken"]["status"] == "failed"
    assert "00000001_cam.txt" in by_name["broken"]["error"]
    for name in ("scene_000", "scene_001"):
        assert by_name[name]["status"] == "ok" and by_name[name]["views"] == 3
        assert len(list((tmp_path / "out" / name / "depths").glob("*.pfm"))) == 3
        points, _ = read_point_cloud(tmp_path / "out" / name / "fused.ply")
        assert len(points) == by_name[name]["fused_points"]
    written = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert written["failed"] == 1 and len(written["results"]) == 3


def test_batch_reconstruct_refuses_bad_view_counts_before_starting_ray(tmp_path, capsys):
    from jobs.reconstruct import main as batch_main

    assert batch_main([str(tmp_path), "--out", str(tmp_path / "out"), "--num-views", "1"]) == 2
    assert "--num-views must be at least 2" in capsys.readouterr().err
    assert batch_main([str(tmp_path), "--out", str(tmp_path / "out"), "--early-views", "1"]) == 2
    assert "--early-views must be 0 or at least 2" in capsys.readouterr().err
    assert batch_main([str(tmp_path), "--out", str(tmp_path / "out"), "--min-source-score", "-0.1"]) == 2
    assert "--min-source-score must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
