"""Depth accuracy of a checkpoint on held-out synthetic scenes (seeds never used in training).

For each image size, generates held-out scenes, runs ``mvs reconstruct``'s depth stage and
scores every view against the exact ground truth: the fraction of valid GT pixels within
1, 2 and 4 mm (missing predictions count as failures) and the MVSNet-style error rates.

    .venv/bin/python benchmarks/reconstruct_accuracy.py [--sizes 640x512 1600x1152] [--scenes 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.cli import HELD_OUT_SEED  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.evaluation import DepthMetrics, evaluate_depth_folder  # noqa: E402
from mvs.inference import ReconstructConfig, reconstruct_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--sizes", nargs="+", default=["640x512", "1600x1152"])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--num-views", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="reconstruct_accuracy")
    args = parser.parse_args()

    model, payload = load_model(args.checkpoint, args.device)
    results = {}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        pooled, per_scene = [], []
        for k in range(args.scenes):
            seed = HELD_OUT_SEED + k
            with tempfile.TemporaryDirectory() as tmp:
                scene_dir, out = Path(tmp) / "scene", Path(tmp) / "recon"
                generate_scene(scene_dir, SynthConfig(views=args.views, width=width, height=height), seed)
                scene = load_scene(scene_dir)
                start = time.perf_counter()
                summary = reconstruct_scene(
                    scene, model, out,
                    ReconstructConfig(max_dim=max(width, height), num_views=args.num_views, device=args.device,
                                      previews=False, fuse=False),
                )
                evaluation = evaluate_depth_folder(out, scene)
            pooled.append(evaluation.total)
            scores = evaluation.total.to_dict()
            per_scene.append({"seed": seed, "seconds": time.perf_counter() - start,
                              "seconds_per_view": summary["seconds_per_view"], **scores})
            print(f"{size} seed {seed}: {scores}")
        combined = DepthMetrics.combine(pooled).to_dict()
        results[size] = {"pooled": combined, "scenes": per_scene}
        print(f"{size} pooled over {args.scenes} scenes: {combined}")
    write_result(args.name, {
        "checkpoint": str(args.checkpoint),
        "checkpoint_meta": {k: v for k, v in payload.get("meta", {}).items() if k != "train_config"},
        "views_per_scene": args.views,
        "num_views": args.num_views,
        "device": args.device,
        "results": results,
    })


if __name__ == "__main__":
    main()
