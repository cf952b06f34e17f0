"""The plumbing of the Ray jobs that needs no cluster: paths, locks, argument parsing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobs.common import (
    join,
    node_lock,
    parse_bool_or_auto,
    resolve_path,
    worker_runtime_env,
    write_text,
)


def test_relative_job_paths_live_under_mvs_home_and_uris_stay(monkeypatch, tmp_path):
    monkeypatch.setenv("MVS_HOME", str(tmp_path / "home"))
    assert resolve_path("runs") == str(tmp_path / "home" / "runs")
    assert resolve_path("/abs/runs") == "/abs/runs"
    assert resolve_path("s3://bucket/mvs/runs") == "s3://bucket/mvs/runs"
    assert resolve_path("~/x").startswith(str(Path.home()))
    assert join("s3://bucket/runs/", "name", "trials") == "s3://bucket/runs/name/trials"


def test_write_text_creates_folders(tmp_path):
    write_text(str(tmp_path / "a" / "b" / "c.txt"), "hello")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "hello"


def test_bool_or_auto():
    assert parse_bool_or_auto("auto") is None
    assert parse_bool_or_auto("TRUE") is True and parse_bool_or_auto("0") is False
    with pytest.raises(ValueError, match="auto, true or false"):
        parse_bool_or_auto("gpu")


def test_node_lock_serialises_processes_on_a_node(tmp_path):
    order = []

    def hold(tag: str) -> None:
        with node_lock(tmp_path / "data"):
            order.append(f"{tag} in")
            time.sleep(0.2)
            order.append(f"{tag} out")

    threads = [threading.Thread(target=hold, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order[0].endswith("in") and order[1].endswith("out") and order[0][0] == order[1][0]


def test_workers_get_the_project_unless_the_job_ships_it(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    modules = worker_runtime_env()["py_modules"]
    assert [Path(m).name for m in modules] == ["jobs", "mvs"]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://pkg.zip"}}')
    assert worker_runtime_env() == {}


def test_train_job_rejects_bad_arguments_before_touching_ray(capsys):
    from jobs.train import main

    assert main(["--num-workers", "0"]) == 2
    assert "--num-workers must be >= 1" in capsys.readouterr().err
    assert main(["--use-gpu", "maybe"]) == 2
    assert main(["optim.learning_rate=1"]) == 2
    assert "unknown option" in capsys.readouterr().err
