"""Distributed training with Ray Train: ``ray job submit -- python jobs/train.py``.

Each worker runs the same training core as ``mvs train`` (``mvs/training.py``): the
model is wrapped in DDP by ``ray.train.torch.prepare_model`` (gloo on CPU, NCCL on GPU),
the data loader is sharded by ``prepare_data_loader``, and rank 0 hands Ray one
checkpoint per epoch (model, optimiser, scheduler, epoch, config, metric history).
``CheckpointConfig`` keeps the best N by validation accuracy; a failed worker or node
restarts the group from the latest checkpoint (``FailureConfig``); re-submitting the
same ``--name`` resumes the run.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/train.py --config configs/train_default.yaml --num-workers 2 optim.epochs=4

The run folder ``<storage-path>/<name>/`` holds Ray's ``checkpoint_*`` folders (each with
``model.pt``, loadable by ``mvs reconstruct --checkpoint``), and, written when the run
ends, ``config.yaml`` (the training config, usable with ``mvs train --config``),
``ray.yaml`` (the distributed settings), ``metrics.jsonl`` (one line per epoch) and
``summary.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `mvs` and `jobs` from this checkout

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field, replace

import torch
import yaml

from jobs.common import connect, is_uri, node_lock, parse_bool_or_auto, resolve_path
from mvs.config import from_dict, load_config, to_dict
from mvs.training import TrainConfig

# Ray Train keeps the best checkpoints by this metric: validation fraction of pixels
# within 2 scene units (train accuracy when there is no validation split).
SCORE_METRIC = "val_acc_2"
FALLBACK_SCORE_METRIC = "train_acc_2"


@dataclass
class DistributedConfig:
    num_workers: int = 2
    use_gpu: str = "auto"  # auto: one GPU per worker when the cluster has GPUs
    cpus_per_worker: float = 1.0
    storage_path: str = "runs"  # local or NFS path (relative: under $MVS_HOME), or s3:// / gs://
    name: str = "train"  # re-using a name resumes that run
    max_failures: int = 2  # worker/node failures survived, each restoring the latest checkpoint
    keep_checkpoints: int = 3  # best N by validation accuracy
    # SyncBatchNorm on GPU. PyTorch has no CPU SyncBatchNorm: on CPU each worker keeps
    # its own batch statistics (or set optim.freeze_batchnorm).
    sync_batchnorm: bool = True


@dataclass
class TrainJobConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: DistributedConfig = field(default_factory=DistributedConfig)


# ----------------------------------------------------------------------------- workers


def _gather_mean(metrics: dict[str, float], sum_keys: tuple[str, ...] = ()) -> dict[str, float]:
    """Average each metric over ranks (sum those in ``sum_keys``); a no-op on one worker."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(metrics)
    gathered: list[dict] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, metrics)
    keys = sorted({k for m in gathered for k in m})
    result = {}
    for key in keys:
        values = [m[key] for m in gathered if key in m]
        result[key] = float(sum(values)) if key in sum_keys else float(sum(values) / len(values))
    return result


def _parameter_spread(model: torch.nn.Module) -> float:
    """Largest difference between ranks of any parameter (0.0 when DDP keeps them in step)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0.0
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).abs().max())


def train_loop_per_worker(loop_config: dict) -> dict:
    """Runs on every Ray Train worker. ``loop_config``: ``to_dict(TrainJobConfig)``."""
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader

    from mvs.checkpoint import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
    from mvs.config import save_config
    from mvs.training import (
        build_datasets,
        build_model,
        build_optimizer,
        ensure_training_data,
        restore_training_state,
        selection_metric,
        train_one_epoch,
        validate,
    )

    job = from_dict(TrainJobConfig, loop_config)
    config, settings = job.train, job.ray
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed)

    with node_lock(config.data.train):  # one generator per node, the others wait and reuse
        ensure_training_data(config.data, progress=False)
    train_set, val_set = build_datasets(config)
    loader = DataLoader(train_set, batch_size=config.optim.batch_size, shuffle=config.data.shuffle,
                        drop_last=True, num_workers=config.data.workers)
    loader = ray.train.torch.prepare_data_loader(loader)
    val_loader = None
    if val_set is not None:
        val_loader = ray.train.torch.prepare_data_loader(DataLoader(val_set, batch_size=1, shuffle=False))
    if len(loader) == 0:
        raise ValueError(f"{len(train_set)} training samples make no batch of {config.optim.batch_size} "
                         f"per worker with {world} workers")
    steps = min(len(loader), config.optim.steps_per_epoch or len(loader))

    model = build_model(config)
    if world > 1 and settings.sync_batchnorm and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = ray.train.torch.prepare_model(model)
    optimizer, scheduler = build_optimizer(model, config, steps)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.optim.amp else None
    val_config = config
    if config.optim.validation_samples is not None:
        # The cap is for the whole validation pass; each worker sees its shard.
        val_config = replace(config, optim=replace(config.optim,
                                                   validation_samples=max(1, config.optim.validation_samples // world)))

    start_epoch, best, history, restarts = 0, -float("inf"), [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            payload = read_checkpoint(Path(folder) / CHECKPOINT_FILE, map_location=device)
        start_epoch, best = restore_training_state(payload, model, optimizer, scheduler)
        history = payload["training_state"].get("history", [])
        restarts = payload["training_state"].get("restarts", []) + [start_epoch]
        if rank == 0:
            print(f"restored from {checkpoint.path}: resuming at epoch {start_epoch + 1}", flush=True)

    score_key = SCORE_METRIC if val_loader is not None else FALLBACK_SCORE_METRIC
    for epoch in range(start_epoch, config.optim.epochs):
        train_set.set_epoch(epoch)
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # DistributedSampler reshuffles per epoch
        start = time.perf_counter()
        metrics = train_one_epoch(model, loader, optimizer, scheduler, config, device, scaler,
                                  progress=False, description=f"epoch {epoch + 1}")
        metrics = _gather_mean(metrics, sum_keys=("samples_per_second",))
        if val_loader is not None:
            metrics.update(_gather_mean(validate(model, val_loader, val_config, device)))
        metrics.update(epoch=epoch, world_size=world, epoch_seconds=time.perf_counter() - start,
                       ddp_param_spread=_parameter_spread(model), restarts=len(restarts))
        best = max(best, selection_metric(metrics))
        metrics["best_" + score_key] = best
        history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                  "epoch": epoch, "best_metric": best, "history": history,
                                  "restarts": restarts}
                meta = {"epoch": epoch, "metrics": metrics, "train_config": to_dict(config),
                        "distributed": to_dict(settings)}
                save_checkpoint(Path(folder) / CHECKPOINT_FILE, model, config.model, meta=meta,
                                training_state=training_state)
                save_config(config, Path(folder) / "config.yaml")
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
            print(f"epoch {epoch + 1}/{config.optim.epochs}: loss {metrics.get('train_loss', float('nan')):.4f}  "
                  f"{score_key} {metrics.get(score_key, float('nan')):.4f}  "
                  f"{metrics['samples_per_second']:.2f} samples/s", flush=True)
        else:
            ray.train.report(metrics)  # every rank reports the same number of times
    return {"history": history, "restarts": restarts}


# ------------------------------------------------------------------------------ driver


def resolve_job_paths(job: TrainJobConfig) -> TrainJobConfig:
    """Relative paths under $MVS_HOME (see jobs/common.py), so every worker agrees."""
    job.train.data.train = resolve_path(job.train.data.train)
    job.train.data.extra_train = [resolve_path(path) for path in job.train.data.extra_train]
    job.ray.storage_path = resolve_path(job.ray.storage_path)
    job.train.out = str(Path(job.ray.storage_path) / job.ray.name) if not is_uri(job.ray.storage_path) else job.ray.storage_path
    return job


def build_trainer(job: TrainJobConfig, callbacks: list | None = None):
    """A ``TorchTrainer`` for the job (cluster must be connected). ``callbacks``: Ray Train
    ``UserCallback``s, e.g. Tune's report callback when the run is one trial of a search."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from jobs.common import cluster_has_gpus

    wanted = parse_bool_or_auto(job.ray.use_gpu)
    use_gpu = cluster_has_gpus() if wanted is None else wanted
    score = SCORE_METRIC if job.train.data.validation_fraction > 0 else FALLBACK_SCORE_METRIC
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=to_dict(job),
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.ray.num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": job.ray.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=job.ray.name,
            storage_path=job.ray.storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=job.ray.keep_checkpoints, checkpoint_score_attribute=score,
                checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=job.ray.max_failures),
            callbacks=callbacks,
        ),
    )


def _write_text(result, name: str, text: str) -> None:
    """Write a small file into the run folder, on whatever filesystem Ray stored the run
    (``result.path`` is a path inside ``result.filesystem``: local, NFS, S3 or GCS)."""
    filesystem = result.filesystem
    filesystem.create_dir(result.path, recursive=True)
    with filesystem.open_output_stream(f"{result.path}/{name}") as stream:
        stream.write(text.encode())


def run(job: TrainJobConfig, address: str | None = None) -> dict:
    """Connect, train, write the run summary. Returns the summary dict."""
    job = resolve_job_paths(job)
    connect(address)
    trainer = build_trainer(job)
    print(f"training {job.ray.name!r} on {job.ray.num_workers} worker(s); run folder "
          f"{job.ray.storage_path.rstrip('/')}/{job.ray.name}", flush=True)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    history = (result.return_value or {}).get("history", [])
    best = sorted(((c.path, m.get(SCORE_METRIC, m.get(FALLBACK_SCORE_METRIC))) for c, m in (result.best_checkpoints or [])),
                  key=lambda item: -item[1] if item[1] is not None else float("inf"))
    summary = {
        "name": job.ray.name,
        "run_path": result.path,
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "best_checkpoints": best,
        "final_metrics": result.metrics,
        "restarts": (result.return_value or {}).get("restarts", []),
        "epochs": [h["epoch"] for h in history],
    }
    _write_text(result, "config.yaml", yaml.safe_dump(to_dict(job.train), sort_keys=False))
    _write_text(result, "ray.yaml", yaml.safe_dump(to_dict(job.ray), sort_keys=False))
    _write_text(result, "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    _write_text(result, "summary.json", json.dumps(summary, indent=2, default=str))
    print(f"done: latest checkpoint {summary['latest_checkpoint']}", flush=True)
    if best:
        print(f"best checkpoint     {best[0][0]}  (accuracy within 2 units {best[0][1]:.4f})", flush=True)
    print(f"reconstruct with:   mvs reconstruct SCENE --out OUT --checkpoint {summary['latest_checkpoint']}", flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="training YAML (the same format as `mvs train --config`)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=5e-4 model.hypotheses=[32,16,8]")
    defaults = DistributedConfig()
    parser.add_argument("--num-workers", type=int, default=defaults.num_workers)
    parser.add_argument("--use-gpu", default=defaults.use_gpu, help="auto (default), true or false")
    parser.add_argument("--cpus-per-worker", type=float, default=defaults.cpus_per_worker)
    parser.add_argument("--storage-path", default=defaults.storage_path,
                        help="run storage: local/NFS path (relative: under $MVS_HOME, default ~/mvs) or s3://, gs://")
    parser.add_argument("--name", default=defaults.name, help="run name; re-using it resumes the run")
    parser.add_argument("--max-failures", type=int, default=defaults.max_failures)
    parser.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints)
    parser.add_argument("--no-sync-batchnorm", action="store_true", help="keep per-worker BatchNorm statistics on GPU")
    parser.add_argument("--address", default=None, help="Ray address (default: the job's cluster, else a local one)")
    return parser


def job_config_from_args(args: argparse.Namespace) -> TrainJobConfig:
    train = load_config(TrainConfig, args.config, args.overrides)
    parse_bool_or_auto(args.use_gpu)  # fail early on a typo
    settings = DistributedConfig(
        num_workers=args.num_workers, use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker,
        storage_path=args.storage_path, name=args.name, max_failures=args.max_failures,
        keep_checkpoints=args.keep_checkpoints, sync_batchnorm=not args.no_sync_batchnorm,
    )
    if settings.num_workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {settings.num_workers}")
    return TrainJobConfig(train=train, ray=settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mvs.errors import MVSInputError

    try:
        job = job_config_from_args(args)
        run(job, address=args.address)
    except (MVSInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Pickle the worker function by reference (module `jobs.train`), not as __main__.
    from jobs.train import main as package_main

    sys.exit(package_main())
