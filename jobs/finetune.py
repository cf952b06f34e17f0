"""Self-supervised fine-tuning on one scene as a Ray job: ``ray job submit -- python jobs/finetune.py``.

The work is ``mvs.finetune.finetune`` (what ``mvs finetune`` runs), executed in one Ray
task that asks for a GPU when the cluster has one (``--use-gpu auto``), else for
``--num-cpus`` cores. Options are those of ``mvs finetune``::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/finetune.py /data/dtu_scan24 --out /runs/scan24.pt --steps 200

Paths: relative scene/out/checkpoint paths are taken under ``$MVS_HOME`` (default
``~/mvs``, see ``jobs/common.py``), because a submitted job runs in a temporary copy of
the project. The task reads the scene and writes the checkpoint (and its
``.finetune.yaml`` / ``.finetune.json``) on the node it runs on: on a multi-node cluster
use storage every node sees. The summary is printed as JSON when the task ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `mvs` and `jobs` from this checkout

import argparse
import json

from jobs.common import cluster_has_gpus, connect, parse_bool_or_auto, resolve_path
from mvs.config import from_dict, to_dict
from mvs.finetune import FinetuneConfig, add_arguments, config_from_args


def _finetune_task(config: dict) -> dict:
    """Runs on a Ray worker: rebuild the config and fine-tune (no Ray inside mvs)."""
    from mvs.finetune import finetune

    return finetune(from_dict(FinetuneConfig, config), progress=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--use-gpu", default="auto", help="auto (a GPU when the cluster has one), true or false")
    parser.add_argument("--num-cpus", type=float, default=2.0, help="CPU cores the task reserves (default 2)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local Ray)")
    return parser


def job_config(args: argparse.Namespace, use_gpu: bool) -> FinetuneConfig:
    """The FinetuneConfig the task runs: paths resolved for the job, device from the resources."""
    config = config_from_args(args)
    config.scene = resolve_path(config.scene)
    config.out = resolve_path(config.out)
    if config.checkpoint:
        config.checkpoint = resolve_path(config.checkpoint)
    if args.device is None:  # the task's resources decide, not what the driver's machine has
        config.device = "cuda" if use_gpu else "cpu"
    return config


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    ray = connect(args.address)
    use_gpu = parse_bool_or_auto(args.use_gpu)
    if use_gpu is None:
        use_gpu = cluster_has_gpus()
    config = job_config(args, use_gpu)
    task = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=args.num_cpus)(_finetune_task)
    print(f"fine-tuning {config.scene} -> {config.out} on {'a GPU' if use_gpu else 'CPU'}", flush=True)
    summary = ray.get(task.remote(to_dict(config)))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
