"""Hyper-parameter search with Ray Tune: ``ray job submit -- python jobs/tune.py``.

Each trial is a small distributed training run (a ``TorchTrainer`` built exactly as in
``jobs/train.py``) inside a Tune function trainable; ``TuneReportCallback`` forwards each
epoch's metrics to Tune, and ASHA stops weak trials early on validation accuracy (the
Tune + Train pattern of Ray 2.60, Train V2).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/tune.py --config configs/train_default.yaml --samples 8 --epochs 4

The search space is a YAML mapping of dotted config keys to distributions (default:
:data:`DEFAULT_SPACE`, over learning rate, weight decay, cost-volume groups, hypotheses
per stage and stage loss weights)::

    optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
    model.groups: {choice: [[8, 4, 4], [4, 4, 2]]}

The experiment folder ``<storage-path>/<name>/`` gets ``trials.csv`` (one row per trial),
``best_config.yaml`` (a training config for ``jobs/train.py --config`` or ``mvs train
--config``) and ``best.json``. Re-running with ``--resume`` continues an interrupted search.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `mvs` and `jobs` from this checkout

import argparse
import json
from typing import Any

import yaml

from jobs.common import connect, join, resolve_path, write_text
from jobs.train import FALLBACK_SCORE_METRIC, SCORE_METRIC, DistributedConfig, TrainJobConfig
from mvs.config import apply_overrides, from_dict, load_config, to_dict
from mvs.training import TrainConfig

DEFAULT_SPACE: dict[str, dict[str, list]] = {
    "optim.lr": {"loguniform": [1.0e-4, 3.0e-3]},
    "optim.weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
    "model.groups": {"choice": [[8, 4, 4], [4, 4, 2], [8, 8, 4]]},
    "model.hypotheses": {"choice": [[48, 32, 8], [48, 16, 8], [32, 16, 8]]},
    "model.stage_loss_weights": {"choice": [[0.5, 1.0, 2.0], [1.0, 1.0, 1.0], [0.5, 1.0, 1.0]]},
}
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")


def build_search_space(spec: dict[str, Any]) -> dict[str, Any]:
    """Tune sampling objects from ``{dotted.key: {distribution: args}}``."""
    from ray import tune

    space = {}
    for key, entry in spec.items():
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in DISTRIBUTIONS:
            raise ValueError(f"search space entry {key!r} must be one of {{{', '.join(DISTRIBUTIONS)}: ...}}, "
                             f"got {entry!r}")
        kind, args = next(iter(entry.items()))
        if kind in ("loguniform", "uniform", "randint"):
            if not (isinstance(args, list) and len(args) == 2):
                raise ValueError(f"search space entry {key!r}: {kind} takes [low, high], got {args!r}")
            space[key] = getattr(tune, kind)(*args)
        elif kind == "choice":
            space[key] = tune.choice(args)
        else:
            space[key] = tune.grid_search(args)
    return space


def check_space_against_config(base: TrainConfig, spec: dict[str, Any]) -> None:
    """Every key must exist in the training config (a typo must not be silently ignored)."""
    plain = to_dict(base)
    for key in spec:
        node = plain
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"search space key {key!r} is not a training config option")
            node = node[part]


def trial_config(base: dict, sampled: dict[str, Any]) -> TrainJobConfig:
    """The job config of one trial: the base plus the sampled ``dotted.key`` values."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in sampled.items()]
    train = from_dict(TrainConfig, apply_overrides(base["train"], overrides))
    return TrainJobConfig(train=train, ray=from_dict(DistributedConfig, base["ray"]))


def run_trial(config: dict) -> None:
    """One Tune trial: a distributed training run whose epochs Tune sees as iterations."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from jobs.train import build_trainer

    base = config.pop("__base__")
    job = trial_config(base, config)
    job.ray.name = f"{base['ray']['name']}_{tune.get_context().get_trial_id()}"
    result = build_trainer(job, callbacks=[TuneReportCallback()]).fit()
    if result.error is not None:
        raise result.error


def run(base: TrainJobConfig, space_spec: dict[str, Any], samples: int, max_concurrent: int,
        trial_cpus: float, resume: bool = False, address: str | None = None):
    """Run (or resume) the search; write trials.csv, best_config.yaml and best.json."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from jobs.train import resolve_job_paths

    check_space_against_config(base.train, space_spec)
    base = resolve_job_paths(base)
    connect(address)
    experiment = join(base.ray.storage_path, base.ray.name)
    score = SCORE_METRIC if base.train.data.validation_fraction > 0 else FALLBACK_SCORE_METRIC
    trainable = tune.with_resources(run_trial, {"CPU": trial_cpus})
    if resume and tune.Tuner.can_restore(experiment):
        print(f"resuming the search in {experiment}", flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        # Trial runs are stored beside the experiment, one folder per trial.
        trial_storage = TrainJobConfig(train=base.train, ray=base.ray)
        trial_storage.ray = from_dict(DistributedConfig, {**to_dict(base.ray), "storage_path": join(experiment, "trials")})
        param_space = {**build_search_space(space_spec), "__base__": to_dict(trial_storage)}
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=samples, max_concurrent_trials=max_concurrent,
                # stop_last_trials=False: a trial that reaches max_t ends by returning from
                # fit(), so Ray Train releases its workers itself.
                scheduler=ASHAScheduler(metric=score, mode="max", max_t=base.train.optim.epochs,
                                        grace_period=1, reduction_factor=2, stop_last_trials=False),
            ),
            run_config=tune.RunConfig(name=base.ray.name, storage_path=base.ray.storage_path),
        )
    grid = tuner.fit()
    return summarise(grid, experiment, base, space_spec, score)


def summarise(grid, experiment: str, base: TrainJobConfig, space_spec: dict, score: str) -> dict:
    """Print and save the table of trials and the best configuration."""
    rows = []
    for result in grid:
        config = {k: v for k, v in (result.config or {}).items() if k != "__base__"}
        metrics = result.metrics or {}
        rows.append({
            "trial": Path(result.path).name if result.path else "?",
            **{k: json.dumps(v) if isinstance(v, list) else v for k, v in config.items()},
            score: metrics.get(score), "val_mae": metrics.get("val_mae"),
            "epochs": metrics.get("training_iteration"), "error": repr(result.error) if result.error else "",
        })
    finished = [r for r in rows if r[score] is not None]
    if not finished:
        raise RuntimeError(f"no trial reported {score}; see {experiment}")
    rows.sort(key=lambda r: -(r[score] if r[score] is not None else -1.0))
    import pandas as pd

    table = pd.DataFrame(rows)
    write_text(join(experiment, "trials.csv"), table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)

    best = grid.get_best_result(metric=score, mode="max", scope="all")
    sampled = {k: v for k, v in best.config.items() if k != "__base__"}
    best_job = trial_config(to_dict(base), sampled)
    write_text(join(experiment, "best_config.yaml"), yaml.safe_dump(to_dict(best_job.train), sort_keys=False))
    summary = {"metric": score, "best_value": best.metrics.get(score), "best_sampled": sampled,
               "best_trial_path": best.path, "trials": len(rows), "search_space": space_spec}
    write_text(join(experiment, "best.json"), json.dumps(summary, indent=2, default=str))
    print(f"best {score} = {summary['best_value']:.4f} with {sampled}", flush=True)
    print(f"best config: {join(experiment, 'best_config.yaml')}  (train it: python jobs/train.py --config ...)", flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="base training YAML (same format as `mvs train --config`)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the base config")
    parser.add_argument("--space", type=Path, help="search space YAML (default: learning rate, weight decay, "
                        "groups, hypotheses, loss weights)")
    parser.add_argument("--samples", type=int, default=8, help="trials to sample (default 8)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (ASHA's max_t)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="trials at once (default 1)")
    parser.add_argument("--num-workers", type=int, default=2, help="training workers per trial (default 2)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--trial-cpus", type=float, default=0.5, help="CPUs for each trial's driver (must be > 0)")
    parser.add_argument("--use-gpu", default="auto")
    parser.add_argument("--storage-path", default="tune", help="relative: under $MVS_HOME (default ~/mvs)")
    parser.add_argument("--name", default="tune")
    parser.add_argument("--resume", action="store_true", help="continue the search stored under --name")
    parser.add_argument("--address", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mvs.errors import MVSInputError

    try:
        overrides = list(args.overrides) + ([f"optim.epochs={args.epochs}"] if args.epochs else [])
        train = load_config(TrainConfig, args.config, overrides)
        space = yaml.safe_load(args.space.read_text()) if args.space else DEFAULT_SPACE
        if not isinstance(space, dict) or not space:
            raise ValueError(f"{args.space}: the search space must be a non-empty mapping")
        settings = DistributedConfig(num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker,
                                     use_gpu=args.use_gpu, storage_path=resolve_path(args.storage_path),
                                     name=args.name, max_failures=0, keep_checkpoints=1)
        if args.trial_cpus <= 0:
            raise ValueError("--trial-cpus must be > 0 (Ray rejects zero-CPU trials)")
        run(TrainJobConfig(train=train, ray=settings), space, args.samples, args.max_concurrent,
            args.trial_cpus, resume=args.resume, address=args.address)
    except (MVSInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from jobs.tune import main as package_main  # pickle functions by reference, not as __main__

    sys.exit(package_main())
