"""Fault tolerance of the training job on a multi-node local cluster.

A head with no CPUs (the driver and Ray Train's controller live there) and two worker
nodes of 2 CPUs. Once the run has registered a checkpoint, the node that holds the
training workers is killed; the run must restore its latest checkpoint on the surviving
node and finish, with no completed epoch lost and none counted twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from mvs.checkpoint import read_checkpoint
from mvs.models import ModelConfig
from mvs.training import DataConfig, OptimConfig, TrainConfig
from tests.conftest import make_plane_scene
from tests.ray_cluster import AUTH_ENV, free_port

pytestmark = pytest.mark.slow

SMALL_MODEL = ModelConfig(hypotheses=(8, 4, 2), feature_channels=(8, 8, 4), groups=(4, 4, 2),
                          regularization_channels=(4, 4, 4))
EPOCHS = 8


@pytest.fixture
def three_node_cluster(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from jobs.common import worker_runtime_env

    for key, value in AUTH_ENV.items():
        monkeypatch.setenv(key, value)
    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, runtime_env=worker_runtime_env(), log_to_driver=False)
        yield cluster, workers, f"http://127.0.0.1:{dashboard_port}"
    finally:
        ray.shutdown()
        cluster.shutdown()


def _registered_epochs(run: Path) -> list[int]:
    """Epochs whose checkpoints Ray Train has registered (its own snapshot file)."""
    snapshot = run / "checkpoint_manager_snapshot.json"
    if not snapshot.is_file():
        return []
    try:
        data = json.loads(snapshot.read_text())
    except json.JSONDecodeError:  # being rewritten
        return []
    return sorted(int(item["metrics"]["epoch"]) for item in data.get("checkpoint_results", []))


def test_training_survives_losing_the_workers_node(three_node_cluster, tmp_path):
    from ray.util.state import list_actors

    from jobs.train import DistributedConfig, TrainJobConfig, run

    cluster, worker_nodes, dashboard = three_node_cluster
    data = tmp_path / "planes"
    for k in range(3):
        make_plane_scene(data / f"scene_{k:03d}", views=3, width=48, height=32, seed=k)
    job = TrainJobConfig(
        train=TrainConfig(data=DataConfig(train=str(data), num_views=3, crop=None, validation_fraction=0.34),
                          model=SMALL_MODEL,
                          optim=OptimConfig(epochs=EPOCHS, batch_size=1, warmup_steps=1, steps_per_epoch=2,
                                            validation_samples=2)),
        ray=DistributedConfig(num_workers=2, storage_path=str(tmp_path / "runs"), name="fault",
                              max_failures=2, keep_checkpoints=EPOCHS),
    )
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["summary"] = run(job)
        except BaseException as error:  # reported by the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    run_dir = tmp_path / "runs" / "fault"
    deadline = time.monotonic() + 240
    while not _registered_epochs(run_dir):
        assert thread.is_alive(), f"training ended before any checkpoint: {outcome}"
        assert time.monotonic() < deadline, "no checkpoint registered in 240 s"
        time.sleep(0.1)

    workers = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert workers, "no live training workers found"
    victim = next(node for node in worker_nodes if node.node_id == workers[0].node_id)
    completed_before_kill = max(_registered_epochs(run_dir))
    assert completed_before_kill < EPOCHS - 1, "the run finished before the node could be killed"
    cluster.remove_node(victim, allow_graceful=False)

    thread.join(timeout=300)
    assert not thread.is_alive(), "training did not finish after the node was killed"
    assert "error" not in outcome, repr(outcome.get("error"))
    summary = outcome["summary"]
    # It restarted once, from a checkpoint at least as new as the last one registered
    # before the kill: no completed epoch was lost ...
    assert len(summary["restarts"]) == 1
    assert summary["restarts"][0] >= completed_before_kill + 1
    # ... every epoch is in the history exactly once, and the run finished.
    assert summary["epochs"] == list(range(EPOCHS))
    final = read_checkpoint(summary["latest_checkpoint"])["training_state"]
    assert final["epoch"] == EPOCHS - 1 and final["restarts"] == summary["restarts"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))
    assert metrics[-1]["restarts"] == 1
    assert os.path.isdir(summary["latest_checkpoint"])
