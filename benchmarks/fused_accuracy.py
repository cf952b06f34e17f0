"""Accuracy of the fused point cloud on a held-out synthetic scene, DTU protocol, per image size.

Runs the main job (``mvs demo``'s own :func:`mvs.demo.run_demo`: generate -> reconstruct
with the shipped checkpoint -> fuse with the fusion defaults -> evaluate) once per size and
records accuracy / completeness / overall (mm), the depth-map scores, the fused point count
and the time in ``benchmarks/results/fused_accuracy.json``; the evaluation picture of each
size (cloud coloured by error) goes to ``fused_accuracy_<size>.png``. The target (issue 4):
overall under 0.35 mm at 1600x1200.

Beside each run it scores the scene's exact depth maps, fused with the same settings: what
a perfect network would get, the protocol's floor at that size (ground-truth sampling,
the 0.2 mm thinning and the gaps fusion leaves). ``--no-floor`` skips it.

    .venv/bin/python benchmarks/fused_accuracy.py [--sizes 640x512 1600x1200] [--keep DIR]
        [--num-views N] [--coarse-max-dim N] [--early-views N] [--confidence-threshold C]
        [--min-consistent-views N] [--seed S]
        [--no-floor] [--name NAME]

The options change the reconstruction and the fusion bar from ``mvs reconstruct``'s
defaults; ``--seed`` scores another held-out scene; ``--name`` keeps such runs in their
own files.

At 1600x1200 with 49 views this took 15 min with 5 views per depth map and 17-19 min with
the default 11 (plus 3 for the exact depth maps) on 2 CPU cores; 640x512 takes 2-3 min.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.demo import DemoConfig, run_demo  # noqa: E402
from mvs.evaluation import EvalConfig, GroundTruth, evaluate_point_cloud  # noqa: E402
from mvs.fusion import FusionConfig, fuse_depth_maps  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x512, got {text!r}") from None
    return width, height


def exact_depth_scores(run_dir: Path) -> dict:
    """DTU-protocol scores of the run's scene's exact depth maps, fused with the fusion defaults."""
    scene = load_scene(run_dir / "scene")
    depths = {vid: scene.depth(vid) for vid in scene.view_ids}
    cloud = fuse_depth_maps(scene, depths, None, FusionConfig(), progress=True)
    cloud.write_ply(run_dir / "exact_depths_fused.ply")
    del cloud, depths
    result = evaluate_point_cloud(run_dir / "exact_depths_fused.ply", GroundTruth.from_synthetic_scene(run_dir / "scene"),
                                  run_dir / "exact_depths_evaluation", EvalConfig(write_plys=False, write_png=False))
    return result.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(640, 512), (1600, 1200)])
    parser.add_argument("--views", type=int, default=DemoConfig.views)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--num-views", type=int, default=DemoConfig.num_views)
    parser.add_argument("--coarse-max-dim", type=int, default=DemoConfig.coarse_max_dim,
                        help=f"scale cascade's first pass, as mvs reconstruct (default {DemoConfig.coarse_max_dim}; 0: off)")
    parser.add_argument("--early-views", type=int, default=DemoConfig.early_views,
                        help="views of the stages before the last, as mvs reconstruct")
    parser.add_argument("--coarse-views", type=int, default=DemoConfig.coarse_views,
                        help="views of the first pass, as mvs reconstruct")
    parser.add_argument("--confidence-threshold", type=float, default=FusionConfig().confidence_threshold)
    parser.add_argument("--min-consistent-views", type=int, default=FusionConfig().min_consistent_views)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's outputs under this folder")
    parser.add_argument("--name", default="fused_accuracy", help="name of the JSON and prefix of the PNGs")
    parser.add_argument("--no-floor", action="store_true", help="do not score the exact depth maps")
    args = parser.parse_args(argv)

    runs = []
    with tempfile.TemporaryDirectory(prefix="fused_accuracy_") as tmp:
        base = args.keep or Path(tmp)
        for width, height in args.sizes:
            size = f"{width}x{height}"
            print(f"=== {size} ===", flush=True)
            config = DemoConfig(views=args.views, width=width, height=height, seed=args.seed,
                                num_views=args.num_views, coarse_max_dim=args.coarse_max_dim or None,
                                early_views=args.early_views, coarse_views=args.coarse_views,
                                fusion=FusionConfig(confidence_threshold=args.confidence_threshold,
                                                   min_consistent_views=args.min_consistent_views),
                                checkpoint=args.checkpoint, device=args.device)
            report = run_demo(config, base / size, progress=True)
            picture = RESULTS / f"{args.name}_{size}.png"
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report["files"]["picture"], picture)
            cloud = report["point_cloud"]
            print(f"{size}: accuracy {cloud['accuracy']:.3f}  completeness {cloud['completeness']:.3f}  "
                  f"overall {cloud['overall']:.3f} mm; {report['reconstruction']['fused_points']:,} points; "
                  f"{report['seconds']:.0f} s", flush=True)
            floor = None if args.no_floor else exact_depth_scores(base / size)
            if floor is not None:
                print(f"{size}, exact depth maps: accuracy {floor['accuracy']:.3f}  completeness "
                      f"{floor['completeness']:.3f}  overall {floor['overall']:.3f} mm", flush=True)
            runs.append({
                "size": size,
                "point_cloud": cloud,
                "exact_depths_point_cloud": floor,
                "depth": report["depth"],
                "fused_points": report["reconstruction"]["fused_points"],
                "seconds_per_view": report["reconstruction"]["seconds_per_view"],
                "seconds": report["seconds"],
                "config": report["config"],
                "picture": picture.name,
            })
    write_result(args.name, {"target": "overall < 0.35 mm at 1600x1200", "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
