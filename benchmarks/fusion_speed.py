"""Speed and memory of depth-map fusion: 49 views at 1600x1200 (DTU size) on this machine.

Fuses the exact ground-truth depth maps of a synthetic 49-view scene (with constant
confidence 1), so the work is that of a real reconstruction of the same size: every pixel
of every view goes through the confidence filter and the round trip into its sources.

    .venv/bin/python benchmarks/fusion_speed.py [--size 1600x1200] [--views 49] [--device cpu]
        [--consistency fixed|dynamic] [--normals]

The machine's 1-minute load average is recorded before and after: other processes on the
cores slow the figure down.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.fusion import CONSISTENCY_MODES, FusionConfig, fuse_depth_maps  # noqa: E402
from mvs.inference import peak_rss_gb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--consistency", choices=CONSISTENCY_MODES, default="fixed")
    parser.add_argument("--normals", action="store_true")
    args = parser.parse_args()
    config = FusionConfig(consistency=args.consistency, normals=args.normals)
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        generate_scene(scene_dir, SynthConfig(views=args.views, width=width, height=height, gt_spacing=2.0), HELD_OUT_SEED)
        scene = load_scene(scene_dir)
        start = time.perf_counter()
        depths = {v: scene.depth(v) for v in scene.view_ids}
        confidences = {v: np.ones_like(d) for v, d in depths.items()}
        load_seconds = time.perf_counter() - start
        rss_before = peak_rss_gb()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        cloud = fuse_depth_maps(scene, depths, confidences, config, device=args.device, progress=True)
        fusion_seconds = time.perf_counter() - start
    result = {
        "size": [width, height],
        "views": args.views,
        "device": args.device,
        "fusion_seconds": fusion_seconds,
        "seconds_per_view": fusion_seconds / args.views,
        "depth_loading_seconds": load_seconds,
        "fused_points": int(len(cloud.points)),
        "peak_rss_gb": peak_rss_gb(),
        "peak_rss_gb_before_fusion": rss_before,
        "load_average_1min_before": round(load_before, 2),
        "config": asdict(config),
        "includes": "confidence filter, round trip into 10 sources per view, averaging, colours (image reading)"
        + (", normals" if args.normals else ""),
    }
    print({k: v for k, v in result.items() if k != "config"})
    suffix = ("_dynamic" if args.consistency == "dynamic" else "") + ("_normals" if args.normals else "")
    write_result(f"fusion_speed_{args.device}{suffix}", result)


if __name__ == "__main__":
    main()
