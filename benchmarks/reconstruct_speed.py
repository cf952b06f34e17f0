"""Speed and peak memory of ``mvs reconstruct`` per view at DTU resolution (1600x1152, 5 views).

Runs the depth stage over a few reference views of a synthetic scene in a fresh process
(so peak RSS is this job's alone) and reports seconds per view (after one warm-up view)
and peak resident memory; on a GPU also peak GPU memory. ``--coarse-max-dim`` and
``--early-views`` default to ``mvs reconstruct``'s (the guided scale cascade from 640 px,
5 early views; ``--coarse-max-dim 0``: one scale).

    .venv/bin/python benchmarks/reconstruct_speed.py [--size 1600x1152] [--views 4] [--num-views 5]
        [--coarse-max-dim 640] [--early-views 5] [--device cpu] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.inference import ReconstructConfig, first_pass_size, peak_rss_gb, predict_view  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--size", default="1600x1152")
    parser.add_argument("--views", type=int, default=4, help="reference views timed (after 1 warm-up)")
    parser.add_argument("--num-views", type=int, default=5, help="reference + sources (the target's 5)")
    parser.add_argument("--coarse-max-dim", type=int, default=ReconstructConfig().coarse_max_dim)
    parser.add_argument("--early-views", type=int, default=ReconstructConfig().early_views)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    coarse_size = first_pass_size((width, height), (width, height), args.coarse_max_dim or None)

    model, _ = load_model(args.checkpoint, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        # Enough views for 5-view neighbourhoods; the scene content does not change the cost.
        generate_scene(scene_dir, SynthConfig(views=max(args.views + 1, args.num_views + 2), width=width, height=height),
                       HELD_OUT_SEED)
        scene = load_scene(scene_dir)
        rss_before = peak_rss_gb()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i, ref in enumerate(scene.view_ids[: args.views + 1]):
            sources = scene.source_views(ref, args.num_views - 1)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            predict_view(model, scene, ref, sources, width, height, args.device, coarse_size, args.early_views)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i > 0:  # the first view pays for allocation and kernel selection
                times.append(time.perf_counter() - start)
    result = {
        "size": [width, height],
        "num_views": args.num_views,
        "coarse_size": coarse_size,
        "early_views": args.early_views,
        "device": args.device,
        "seconds_per_view": sum(times) / len(times),
        "seconds_per_view_all": times,
        "peak_rss_gb": peak_rss_gb(),
        "peak_rss_gb_before_inference": rss_before,
        "includes": "image reading and resizing, network forward, copy to host",
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    print(result)
    write_result(args.name or f"reconstruct_speed_{args.device.split(':')[0]}", result)


if __name__ == "__main__":
    main()
