"""Batch reconstruction of many scenes on a Ray cluster: ``ray job submit -- python jobs/reconstruct.py``.

A pool of actors each loads the checkpoint once (one GPU per actor where the cluster has
GPUs) and reconstructs whole scenes with the core ``mvs.inference.reconstruct_scene``:
depth maps, confidence, previews and the fused PLY under ``OUT/<scene name>/``. Scenes go
to whichever actor is free; a progress bar counts finished scenes. A scene that fails (bad
input, an actor that dies) is reported with its error and does not stop the others.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/reconstruct.py /data/scenes --out /data/recon --actors 2

``OUT/batch_summary.json`` lists every scene with its status, timings and point count.
The exit status is 1 when any scene failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `mvs` and `jobs` from this checkout

import argparse
import json
import time
import traceback
from dataclasses import asdict, dataclass, field

from jobs.common import cluster_has_gpus, connect, parse_bool_or_auto, resolve_path
from mvs.fusion import FusionConfig
from mvs.inference import ReconstructConfig

_RECONSTRUCT = ReconstructConfig()


@dataclass
class BatchConfig:
    checkpoint: str | None = None  # None: the checkpoint shipped with mvs
    max_dim: int | None = _RECONSTRUCT.max_dim
    coarse_max_dim: int | None = _RECONSTRUCT.coarse_max_dim  # scale cascade (see mvs reconstruct)
    num_views: int = _RECONSTRUCT.num_views
    early_views: int | None = _RECONSTRUCT.early_views  # stages before the last (see mvs reconstruct)
    coarse_views: int | None = _RECONSTRUCT.coarse_views  # views of the first pass (see mvs reconstruct)
    min_source_score: float = _RECONSTRUCT.min_source_score  # sources scored far below the best are left out
    depth_line: str = "interval"
    previews: bool = True
    fusion: FusionConfig = field(default_factory=FusionConfig)


def find_scenes(roots: list[str]) -> list[Path]:
    """Scene folders: each root is a scene (has cams/ or blended_images/) or a folder of scenes."""
    scenes: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder")
        if (root / "cams").is_dir() or (root / "blended_images").is_dir():
            scenes.append(root)
            continue
        found = sorted(p for p in root.iterdir() if p.is_dir())
        if not found:
            raise ValueError(f"{root}: no scene folders inside")
        scenes.extend(found)  # a sub-folder that is no scene fails on its own, reported
    names = [s.name for s in scenes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"scene names must be unique (outputs go to OUT/<name>): {duplicates}")
    return scenes


class SceneReconstructor:
    """A Ray actor body: the model stays loaded between scenes."""

    def __init__(self, config: dict, device: str):
        import torch

        from mvs.checkpoint import load_model

        self.config = config
        self.device = device
        if device == "cpu":
            import ray

            # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs this actor reserved.
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            torch.set_num_threads(max(1, int(cpus)))
        self.model, _ = load_model(config["checkpoint"], device)

    def reconstruct(self, scene_dir: str, out_dir: str) -> dict:
        import socket

        from mvs.config import from_dict
        from mvs.data.scene import load_scene
        from mvs.inference import reconstruct_scene

        start = time.perf_counter()
        record = {"scene": scene_dir, "out": out_dir, "host": socket.gethostname()}
        try:
            fusion = from_dict(FusionConfig, self.config["fusion"])
            scene = load_scene(scene_dir, self.config["depth_line"])
            config = ReconstructConfig(max_dim=self.config["max_dim"], coarse_max_dim=self.config["coarse_max_dim"],
                                       num_views=self.config["num_views"], early_views=self.config["early_views"],
                                       coarse_views=self.config["coarse_views"],
                                       min_source_score=self.config["min_source_score"],
                                       device=self.device,
                                       previews=self.config["previews"], fusion=fusion)
            summary = reconstruct_scene(scene, self.model, out_dir, config, progress=False)
            record.update(status="ok", views=summary["views"], fused_points=summary.get("fused_points"),
                          seconds_per_view=summary["seconds_per_view"])
        except Exception as error:  # reported per scene; the batch goes on
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc(limit=4))
        record["seconds"] = time.perf_counter() - start
        return record


def run(scene_dirs: list[Path], out: Path, config: BatchConfig, actors: int, cpus_per_actor: float,
        use_gpu: bool | None = None, address: str | None = None, progress: bool = True) -> dict:
    """Reconstruct every scene; returns (and writes) the batch summary."""
    import ray
    from tqdm import tqdm

    if config.checkpoint is not None:
        from mvs.checkpoint import read_checkpoint

        read_checkpoint(config.checkpoint)  # a bad checkpoint fails once, here, not per scene
    connect(address)
    gpus = cluster_has_gpus() if use_gpu is None else use_gpu
    actor_class = ray.remote(num_cpus=cpus_per_actor, num_gpus=1 if gpus else 0, max_restarts=1)(SceneReconstructor)
    plain = asdict(config)
    pool = [actor_class.remote(plain, "cuda" if gpus else "cpu") for _ in range(max(1, min(actors, len(scene_dirs))))]
    out.mkdir(parents=True, exist_ok=True)

    pending = list(scene_dirs)
    running: dict = {}  # ObjectRef -> (actor index, scene)
    records: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(total=len(scene_dirs), desc="scenes", unit="scene", disable=not progress)

    def submit(index: int) -> None:
        scene = pending.pop(0)
        ref = pool[index].reconstruct.remote(str(scene), str(out / scene.name))
        running[ref] = (index, scene)

    for index in range(len(pool)):
        if pending:
            submit(index)
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        index, scene = running.pop(done[0])
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayError as error:  # the actor died (e.g. out of memory)
            record = {"scene": str(scene), "out": str(out / scene.name), "status": "failed",
                      "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
        records.append(record)
        bar.update(1)
        if record["status"] != "ok":
            bar.write(f"FAILED {scene.name}: {record['error']}")
        if pending:
            submit(index)
    bar.close()
    for actor in pool:
        ray.kill(actor)

    failed = [r for r in records if r["status"] != "ok"]
    summary = {
        "scenes": len(records), "succeeded": len(records) - len(failed), "failed": len(failed),
        "seconds": time.perf_counter() - start, "actors": len(pool), "device": "cuda" if gpus else "cpu",
        "config": plain, "results": sorted(records, key=lambda r: r["scene"]),
    }
    (out / "batch_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"{summary['succeeded']}/{summary['scenes']} scenes reconstructed in {summary['seconds']:.1f} s "
          f"with {len(pool)} actor(s); summary {out / 'batch_summary.json'}", flush=True)
    for record in failed:
        print(f"  failed: {record['scene']}: {record['error']}", flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = BatchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenes", nargs="+", help="scene folders, or folders of scene folders "
                        "(relative: under $MVS_HOME, default ~/mvs)")
    parser.add_argument("--out", required=True, help="output root; each scene goes to OUT/<scene name>")
    parser.add_argument("--checkpoint", default=None, help="default: the checkpoint shipped with mvs")
    parser.add_argument("--actors", type=int, default=2, help="model replicas (default 2)")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--use-gpu", default="auto", help="auto (default), true or false: one GPU per actor")
    parser.add_argument("--max-dim", type=int, default=defaults.max_dim)
    parser.add_argument("--coarse-max-dim", type=int, default=defaults.coarse_max_dim,
                        help="run the network at this longer side first, guiding its last stage at --max-dim (0: off)")
    parser.add_argument("--num-views", type=int, default=defaults.num_views)
    parser.add_argument("--early-views", type=int, default=defaults.early_views,
                        help="views of the stages before the last at --max-dim (see mvs reconstruct)")
    parser.add_argument("--coarse-views", type=int, default=defaults.coarse_views,
                        help="views of the first pass (see mvs reconstruct)")
    parser.add_argument("--min-source-score", type=float, default=defaults.min_source_score,
                        help="leave out sources whose pair.txt score is below this fraction of the best (see mvs reconstruct)")
    parser.add_argument("--depth-line", choices=["interval", "min_max"], default=defaults.depth_line)
    parser.add_argument("--no-previews", action="store_true")
    parser.add_argument("--address", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mvs.errors import MVSInputError

    try:
        if args.num_views < 2:
            raise ValueError(f"--num-views must be at least 2, got {args.num_views}")
        if args.early_views is not None and args.early_views < 2 and args.early_views != 0:
            raise ValueError(f"--early-views must be 0 or at least 2, got {args.early_views}")
        if args.coarse_views is not None and args.coarse_views < 2:
            raise ValueError(f"--coarse-views must be at least 2, got {args.coarse_views}")
        if not 0.0 <= args.min_source_score <= 1.0:
            raise ValueError(f"--min-source-score must be in [0, 1], got {args.min_source_score}")
        config = BatchConfig(checkpoint=resolve_path(args.checkpoint) if args.checkpoint else None,
                             max_dim=args.max_dim, coarse_max_dim=args.coarse_max_dim or None,
                             num_views=args.num_views, early_views=args.early_views, coarse_views=args.coarse_views,
                             min_source_score=args.min_source_score, depth_line=args.depth_line,
                             previews=not args.no_previews)
        scenes = find_scenes([resolve_path(s) for s in args.scenes])
        summary = run(scenes, Path(resolve_path(args.out)), config, args.actors, args.cpus_per_actor,
                      parse_bool_or_auto(args.use_gpu), address=args.address)
    except (MVSInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    from jobs.reconstruct import main as package_main  # pickle the actor class by reference

    sys.exit(package_main())
