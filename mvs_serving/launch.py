"""``mvs serve``: start Ray and the reconstruction service locally, from the Serve config YAML.

The same ``serve_config.yaml`` drives ``serve run`` / ``serve deploy`` (Ray reads it) and
``mvs serve`` (read here): its application ``args`` become the ``ServiceConfig`` and its
``deployments`` entries (replicas, autoscaling, ``ray_actor_options``) are applied to the
deployments. ``mvs serve`` then overrides host, port and the flags given on its command line.
"""

from __future__ import annotations

import argparse
import copy
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvs_serving.app import INGRESS, MODEL, build_application

IMPORT_PATH = "mvs_serving.app:build_app"
APP_NAME = "mvs"


@dataclass
class ServeFile:
    """What ``mvs serve`` takes from a Serve config YAML."""

    args: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8000
    name: str = APP_NAME
    route_prefix: str = "/"


def read_serve_config(path: str | Path) -> ServeFile:
    """Read and check a Serve config YAML (Ray's own schema), keeping this application's part."""
    from ray.serve.schema import ServeDeploySchema

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: Serve config not found") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    try:
        ServeDeploySchema.model_validate(data)
    except Exception as error:
        raise ValueError(f"{path}: not a valid Serve config: {error}") from None
    apps = [a for a in data.get("applications", []) if a.get("import_path") == IMPORT_PATH]
    if not apps:
        raise ValueError(f"{path}: no application with import_path {IMPORT_PATH}")
    app = apps[0]
    http = data.get("http_options") or {}
    deployments = {}
    for entry in app.get("deployments") or []:
        options = {k: v for k, v in entry.items() if k != "name"}
        deployments[entry["name"]] = options
    return ServeFile(
        args=dict(app.get("args") or {}), deployments=deployments,
        host=http.get("host", "127.0.0.1"), port=int(http.get("port", 8000)),
        name=app.get("name", APP_NAME), route_prefix=app.get("route_prefix", "/"),
    )


def apply_overrides(serve_file: ServeFile, args: argparse.Namespace) -> ServeFile:
    """Command-line flags over the YAML (only those given)."""
    out = copy.deepcopy(serve_file)
    for flag, key in (("checkpoint", "checkpoint"), ("device", "device"), ("max_upload_mb", "max_upload_mb"),
                      ("job_ttl", "job_ttl_s"), ("tmp_dir", "tmp_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            out.args[key] = str(value) if isinstance(value, Path) else value
    model = out.deployments.setdefault(MODEL, {})
    if getattr(args, "replicas", None) is not None:
        model.pop("autoscaling_config", None)  # a fixed count replaces autoscaling
        model["num_replicas"] = args.replicas
    actor = model.setdefault("ray_actor_options", {})
    if getattr(args, "num_cpus", None) is not None:
        actor["num_cpus"] = args.num_cpus
    if getattr(args, "num_gpus", None) is not None:
        actor["num_gpus"] = args.num_gpus
    if getattr(args, "host", None):
        out.host = args.host
    if getattr(args, "port", None) is not None:
        out.port = args.port
    return out


def deploy(serve_file: ServeFile) -> str:
    """Start Serve's HTTP proxy on host:port and run the application (Ray must be up)."""
    from ray import serve

    serve.start(http_options={"host": serve_file.host, "port": serve_file.port})
    serve.run(build_application(serve_file.args, serve_file.deployments), name=serve_file.name,
              route_prefix=serve_file.route_prefix, blocking=False)
    return f"http://{serve_file.host}:{serve_file.port}{serve_file.route_prefix.rstrip('/')}"


def wait_until_healthy(url: str, timeout_s: float = 120.0) -> dict:
    """Poll GET /v1/health until it answers 200 (the proxy may lag the deployment)."""
    import json

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as response:
                return json.loads(response.read())
        except Exception as error:  # connection refused, 404 while routes propagate
            last = error
            time.sleep(0.5)
    raise TimeoutError(f"{url}/v1/health did not answer within {timeout_s:.0f} s ({last})")


def serve_main(args: argparse.Namespace) -> int:
    """``mvs serve``: run until Ctrl-C / SIGTERM, then shut down what was started."""
    import ray
    from ray import serve

    serve_file = apply_overrides(read_serve_config(args.config) if args.config else ServeFile(), args)
    if args.address:
        ray.init(address=args.address)
    else:
        # A Ray instance of our own, even when a cluster already runs on this machine.
        ray.init(address="local", include_dashboard=False, num_cpus=args.ray_cpus)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = deploy(serve_file)
        health = wait_until_healthy(url)
        print(f"mvs reconstruction service on {url}  (docs: {url}/docs)")
        print(f"limits: {health['limits']}")
        print("Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        print("shutting down", flush=True)
        serve.shutdown()
        ray.shutdown()
    return 0


__all__ = ["INGRESS", "MODEL", "ServeFile", "apply_overrides", "deploy", "read_serve_config", "serve_main",
           "wait_until_healthy"]
