"""cluster.yaml must be a valid Ray cluster-launcher config (the JSON schema shipped in ray)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def ray_cluster_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema(cluster_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(cluster_config, ray_cluster_schema())
    # Ray's own path, as `ray up` takes it: fill in the provider defaults, then validate.
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_cluster_yaml_has_a_cpu_head_and_gpu_workers_that_install_the_project(cluster_config):
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["max_workers"] >= 1 and t["min_workers"] <= t["max_workers"] for t in gpu_types)
    setup = " ".join(cluster_config["setup_commands"])
    assert "torch==2.13.0" in setup and "pip install -e ~/mvs-src" in setup
    assert cluster_config["file_mounts"]["~/mvs-src"] == "."


def test_the_schema_check_catches_a_broken_config(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["available_node_types"]["gpu_a10g"]["resources"] = "one GPU"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_cluster_schema())
    unknown = copy.deepcopy(cluster_config)
    unknown["worker_setup_comands"] = []  # a typo must not pass silently
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(unknown, ray_cluster_schema())
