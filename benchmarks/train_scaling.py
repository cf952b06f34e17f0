"""Training throughput of the Ray Train job with 1 and 2 workers, and the scaling efficiency.

Runs ``jobs/train.py``'s TorchTrainer on a private local Ray instance (CPU, or one GPU per
worker with ``--use-gpu``) with the default model on synthetic DTU-style training data,
per-worker batch fixed (weak scaling: N workers process N times the samples per step).
Each configuration trains ``--epochs`` short epochs; the last epoch's samples/s (summed
over workers, data loading included) is the figure, the first being warm-up.

    efficiency(N) = throughput(N workers) / (N x throughput(1 worker))

On CPU every worker gets ``--cpus-per-worker`` cores, so on a 2-core machine 2 workers
use the whole machine and 1 worker half of it.

    .venv/bin/python benchmarks/train_scaling.py [--workers 1 2] [--steps 12] [--use-gpu]

Writes ``benchmarks/results/train_scaling_{cpu,gpu}.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=2, help="per-worker batch (default 2)")
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch (default 12)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 192], metavar=("W", "H"))
    parser.add_argument("--data", default=str(ROOT / "data" / "synth_train"),
                        help="training data (generated: 4 synthetic scans, when missing)")
    parser.add_argument("--use-gpu", action="store_true")
    args = parser.parse_args()

    import ray

    from jobs.common import worker_runtime_env
    from jobs.train import DistributedConfig, TrainJobConfig, run
    from mvs.training import DataConfig, OptimConfig, TrainConfig

    device = "gpu" if args.use_gpu else "cpu"
    cpus = int(max(args.workers) * args.cpus_per_worker)  # Ray Train's controller takes no CPU
    ray.init(num_cpus=cpus, num_gpus=max(args.workers) if args.use_gpu else 0, include_dashboard=False,
             object_store_memory=1 << 30, runtime_env=worker_runtime_env(), log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mvs_scaling_") as storage:
        for workers in args.workers:
            train = TrainConfig(
                data=DataConfig(train=args.data, synthetic_scenes=4, synthetic_views=49, synthetic_lights=2,
                                num_views=3, crop=tuple(args.crop), validation_fraction=0.0),
                optim=OptimConfig(epochs=args.epochs, batch_size=args.batch, steps_per_epoch=args.steps,
                                  warmup_steps=1),
            )
            job = TrainJobConfig(train=train, ray=DistributedConfig(
                num_workers=workers, cpus_per_worker=args.cpus_per_worker, use_gpu=str(args.use_gpu).lower(),
                storage_path=storage, name=f"w{workers}", max_failures=0, keep_checkpoints=1))
            load_before = os.getloadavg()[0]
            tick = time.perf_counter()
            summary = run(job)
            wall = time.perf_counter() - tick
            metrics = summary["final_metrics"]
            rows.append({"workers": workers, "samples_per_second": metrics["samples_per_second"],
                         "epoch_seconds": metrics["epoch_seconds"], "global_batch": workers * args.batch,
                         "steps": metrics["steps"], "wall_seconds_including_setup": wall,
                         "load_average_before": load_before})
            print(f"{workers} worker(s): {metrics['samples_per_second']:.2f} samples/s "
                  f"(epoch {metrics['epoch_seconds']:.1f} s, run {wall:.0f} s incl. set-up)", flush=True)
    ray.shutdown()

    base = next((r["samples_per_second"] for r in rows if r["workers"] == 1), None)
    for row in rows:
        row["scaling_efficiency"] = row["samples_per_second"] / (row["workers"] * base) if base else None
    name = f"train_scaling_{device}"
    write_result(name, {
        "description": "Ray Train throughput (samples/s summed over workers) with a fixed per-worker batch",
        "config": {"per_worker_batch": args.batch, "steps_per_epoch": args.steps, "epochs": args.epochs,
                   "crop": args.crop, "cpus_per_worker": args.cpus_per_worker, "num_views": 3,
                   "model": "default ModelConfig", "device": device},
        "results": rows,
    })
    plot(rows, RESULTS / f"{name}.png", device)
    return 0


def plot(rows: list[dict], path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [r["workers"] for r in rows]
    throughput = [r["samples_per_second"] for r in rows]
    base = throughput[workers.index(1)] if 1 in workers else throughput[0]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(workers, throughput, "o-", label="measured")
    ax.plot(workers, [base * w for w in workers], "--", color="grey", label="linear")
    for w, t, r in zip(workers, throughput, rows, strict=True):
        if r.get("scaling_efficiency") is not None:
            ax.annotate(f"{100 * r['scaling_efficiency']:.0f}%", (w, t), textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("Ray Train workers")
    ax.set_ylabel("training samples / s")
    ax.set_xticks(workers)
    ax.set_title(f"Training throughput ({device})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
