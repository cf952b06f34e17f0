"""Speed and peak memory of ``mvs reconstruct`` per view at DTU resolution (1600x1152, 5 views).

Runs the depth stage over a few reference views of a synthetic scene in a fresh process
(so peak RSS is this job's alone) and reports seconds per view (after one warm-up view)
and peak resident memory; on a GPU also peak GPU memory. ``--coarse-max-dim`` and
``--early-views`` default to ``mvs reconstruct``'s (the guided scale cascade from 640 px,
5 early views; ``--coarse-max-dim 0``: one scale). On CUDA the network runs under float16
autocast, as ``mvs reconstruct`` does; ``--fp32`` runs it in float32 instead.

    .venv/bin/python benchmarks/reconstruct_speed.py [--size 1600x1152] [--views 4] [--num-views 5]
        [--coarse-max-dim 640] [--early-views 5] [--device cpu] [--fp32] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.inference import ReconstructConfig, SceneReconstruction, peak_rss_gb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--size", default="1600x1152")
    parser.add_argument("--views", type=int, default=4, help="reference views timed (after 1 warm-up)")
    parser.add_argument("--num-views", type=int, default=5, help="reference + sources (the target's 5)")
    parser.add_argument("--coarse-max-dim", type=int, default=ReconstructConfig().coarse_max_dim)
    parser.add_argument("--early-views", type=int, default=ReconstructConfig().early_views)
    parser.add_argument("--coarse-views", type=int, default=ReconstructConfig().coarse_views)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp32", action="store_true", help="on CUDA, run in float32 instead of float16 mixed precision")
    parser.add_argument("--scene-views", type=int, default=49,
                        help="views of the generated scene (49, as DTU: sources come from pair.txt as in a real run)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    float16 = args.device.startswith("cuda") and not args.fp32  # autocast is CUDA-only in predict_view

    model, _ = load_model(args.checkpoint, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        # A whole DTU-sized rig, so that the resized-image cache (as in ``mvs reconstruct``)
        # hits only where a real run's neighbouring views share sources.
        generate_scene(scene_dir, SynthConfig(views=max(args.scene_views, args.views + 1, args.num_views + 1), width=width, height=height),
                       HELD_OUT_SEED)
        scene = load_scene(scene_dir)
        rss_before = peak_rss_gb()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        config = ReconstructConfig(max_dim=max(width, height), coarse_max_dim=args.coarse_max_dim or None,
                                   num_views=args.num_views, early_views=args.early_views, coarse_views=args.coarse_views,
                                   device=args.device,
                                   mixed_precision=not args.fp32, previews=False, fuse=False)
        reconstruction = SceneReconstruction(scene, model, config)
        assert (reconstruction.width, reconstruction.height) == (width, height)
        times = []
        # As `mvs reconstruct` runs: resized images cached across views, the next view's
        # prefetched on a GPU. Each view's time runs from the end of the one before.
        for i, view in enumerate(reconstruction.depth_maps()):
            if i > 0:  # the first view pays for allocation and kernel selection
                times.append(view.seconds)
            if i == args.views:
                break
    result = {
        "size": [width, height],
        "num_views": args.num_views,
        "coarse_size": reconstruction.coarse_size,
        "early_views": args.early_views,
        "coarse_views": args.coarse_views,
        "device": args.device,
        "precision": "float16-autocast" if float16 else "float32",
        "seconds_per_view": sum(times) / len(times),
        "seconds_per_view_all": times,
        "peak_rss_gb": peak_rss_gb(),
        "peak_rss_gb_before_inference": rss_before,
        "scene_views": len(scene.view_ids),
        "includes": "image reading and resizing (cached across views as in mvs reconstruct), network forward, "
                    "copy to host",
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    print(result)
    # A float32 CUDA run gets its own default name rather than replacing the float16 figures.
    suffix = "_fp32" if args.device.startswith("cuda") and args.fp32 else ""
    write_result(args.name or f"reconstruct_speed_{args.device.split(':')[0]}{suffix}", result)


if __name__ == "__main__":
    main()
